"""Classifies a digit image with a Caffe LeNet through espresso's Python module and prints the ten
classes by probability, as `espresso classify --top 10 --scale 0.00390625` does.
    python3 classify.py LENET.prototxt LENET.caffemodel DIGIT.png"""
import sys

import espresso


def main(prototxt, caffemodel, image):
    model = espresso.load(prototxt, caffemodel)
    pixels = espresso.load_image(image, channels=1, height=28, width=28, scale=0.00390625)
    prob = model.run({"data": pixels[None]})["prob"][0]
    print(image)
    for rank, k in enumerate(sorted(range(10), key=lambda c: -prob[c]), start=1):
        print(f"  {rank}. class {k}  prob {prob[k]:.6f}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
