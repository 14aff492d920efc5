"""The Python module against independent references: the CLI-tested LeNet accuracy on real MNIST digits,
the same outputs from every model format and from bytes, errors as exceptions, the GIL released while a
model runs, and a short Caffe training run whose loss goes down."""
import gzip
import os
import pathlib
import subprocess
import threading
import time

import numpy as np
import pytest

import espresso

DATA = pathlib.Path(os.environ.get("ESPRESSO_DATA", os.environ.get("ESPRESSO_DEFAULT_DATA", "../shared/data")))
LENET = DATA / "caffe" / "lenet"
MNIST = DATA / "mnist"

pytestmark = pytest.mark.skipif(not (LENET / "lenet_iter_10000.caffemodel").exists(),
                                reason=f"shared data missing in {DATA}")


def mnist_test(count):
    with gzip.open(MNIST / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), dtype=np.uint8, offset=16)[: count * 784].reshape(count, 1, 28, 28)
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)[:count]
    return images.astype(np.float32) * 0.00390625, labels


@pytest.fixture(scope="module")
def lenet():
    return espresso.load(str(LENET / "v2_format" / "lenet.prototxt"), str(LENET / "lenet_iter_10000.caffemodel"))


def test_lenet_classifies_mnist(lenet):
    images, labels = mnist_test(500)
    assert lenet.inputs == ["data"] and lenet.outputs == ["prob"]
    prob = lenet.run({"data": images})["prob"]
    assert prob.shape == (500, 10) and prob.dtype == np.float32
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)
    assert (prob.argmax(axis=1) == labels).mean() >= 0.98


def test_numpy_round_trip_takes_other_dtypes_and_layouts(lenet):
    images, _ = mnist_test(4)
    reference = lenet.run({"data": images})["prob"]
    as_double = lenet.run({"data": images.astype(np.float64)})["prob"]
    strided = np.asfortranarray(images)
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(as_double, reference)
    np.testing.assert_array_equal(lenet.run({"data": strided})["prob"], reference)
    out = lenet.run({"data": images})["prob"]
    out[:] = 0  # outputs are the caller's to change
    np.testing.assert_array_equal(lenet.run({"data": images})["prob"], reference)


def test_every_format_and_bytes_give_the_same_outputs(lenet, tmp_path):
    images, _ = mnist_test(3)
    reference = lenet.run({"data": images})["prob"]
    prototxt = (LENET / "v2_format" / "lenet.prototxt").read_bytes()
    weights = (LENET / "lenet_iter_10000.caffemodel").read_bytes()
    from_bytes = espresso.load_bytes(prototxt, "caffe", weights)
    np.testing.assert_array_equal(from_bytes.run({"data": images})["prob"], reference)

    lenet.save(str(tmp_path / "lenet.esp"))
    for package in (espresso.load(str(tmp_path / "lenet.esp")),
                    espresso.load_bytes((tmp_path / "lenet.esp").read_bytes(), "esp")):
        np.testing.assert_array_equal(package.run({"data": images})["prob"], reference)

    onnx_path = DATA / "onnx" / "mnist-1" / "model.onnx"
    onnx_file = espresso.load(str(onnx_path))
    onnx_bytes = espresso.load_bytes(onnx_path.read_bytes(), "onnx")
    x = {onnx_file.inputs[0]: images[:1]}
    np.testing.assert_array_equal(onnx_file.run(x)[onnx_file.outputs[0]], onnx_bytes.run(x)[onnx_bytes.outputs[0]])


def test_errors_are_exceptions(lenet):
    with pytest.raises(espresso.FileError, match="no such file"):
        espresso.load("/no/such/model.prototxt")
    with pytest.raises(espresso.ParseError):
        espresso.load_bytes(b"not a model", "onnx")
    with pytest.raises(ValueError, match="format must be"):
        espresso.load_bytes(b"", "keras")
    with pytest.raises(espresso.ParseError, match="TFL3"):
        espresso.load_bytes(b"not a model", "tflite")
    with pytest.raises(espresso.UnsupportedError, match="tpu"):
        espresso.load(str(LENET / "v2_format" / "lenet.prototxt"), device="tpu")
    with pytest.raises(espresso.ShapeError):
        lenet.run({"data": np.zeros((1, 1, 4, 4), np.float32)})
    with pytest.raises(espresso.ModelError, match="weight blob 0 should be 20x3x5x5"):
        lenet.run({"data": np.zeros((1, 3, 28, 28), np.float32)})
    with pytest.raises(espresso.ModelError, match="no input named 'pixels'"):
        lenet.run({"pixels": np.zeros((1, 1, 28, 28), np.float32)})
    with pytest.raises(TypeError):
        lenet.run({"data": "not an array"})
    assert issubclass(espresso.ShapeError, espresso.Error) and issubclass(espresso.Error, RuntimeError)
    # The model still works after the errors.
    assert lenet.run({"data": np.zeros((1, 1, 28, 28), np.float32)})["prob"].shape == (1, 10)


def test_sessions_release_the_gil(lenet):
    images, _ = mnist_test(256)
    session = lenet.session(threads=1)
    ticks = []
    done = threading.Event()

    def count_ticks():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    ticker = threading.Thread(target=count_ticks)
    ticker.start()
    start = time.perf_counter()
    for _ in range(5):
        session.run({"data": images})
    elapsed = time.perf_counter() - start
    done.set()
    ticker.join()
    # With the GIL held for the whole run the ticker would stall; released, it keeps ticking throughout.
    during = [t for t in ticks if start <= t <= start + elapsed]
    assert elapsed > 0.02 and len(during) >= elapsed / 0.001 * 0.2


def test_info_and_devices(lenet):
    layers = lenet.info()
    assert [layer["type"] for layer in layers][:2] == ["Convolution", "Pooling"]
    assert layers[0]["output_shapes"] == [[64, 20, 24, 24]] and layers[0]["params"] == 520
    assert espresso.devices()[0]["device"] == "cpu"


def test_short_training_run_lowers_the_loss(tmp_path):
    net = tmp_path / "lenet_train.prototxt"
    template = (LENET / "v2_format" / "lenet_train_test.prototxt").read_text()
    source = f'source: "idx:{MNIST}"'
    net.write_text(template.replace('source: "examples/mnist/mnist_train_lmdb"', source)
                   .replace('source: "examples/mnist/mnist_test_lmdb"', source)
                   .replace("backend: LMDB", ""))
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{net}"\nbase_lr: 0.01\nmomentum: 0.9\nlr_policy: "fixed"\nmax_iter: 100\n'
                      f'snapshot_prefix: "{tmp_path}/lenet"\nrandom_seed: 1\n')
    trainer = espresso.Trainer(str(solver))
    trainer.step(60)
    losses = trainer.losses
    assert trainer.iteration == 60 and len(losses) == 60
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])


def test_metadata_of_each_format(lenet, tmp_path):
    # LeNet's prototxt declares data 64x1x28x28 and ten classes in 8 layers (after its Input); the model
    # zoo's mnist-1 was written by CNTK 2.4 (shared data's MANIFEST.md).
    assert lenet.format == "caffe" and lenet.layer_count == 8 and lenet.labels == []
    assert lenet.input_shapes == {"data": (64, 1, 28, 28)}
    assert lenet.output_shapes == {"prob": (64, 10)}
    meta = lenet.metadata
    assert meta["name"] == "LeNet" and meta["format"] == "caffe" and meta["producer"] == ""
    cntk = espresso.load(str(DATA / "onnx" / "mnist-1" / "model.onnx"))
    assert cntk.format == "onnx" and "CNTK" in cntk.metadata["producer"] and "2.4" in cntk.metadata["producer"]
    assert cntk.input_shapes == {"Input3": (1, 1, 28, 28)}
    assert list(cntk.output_shapes.values()) == [(1, 10)]
    lenet.save(str(tmp_path / "lenet.esp"))
    package = espresso.load(str(tmp_path / "lenet.esp"))
    assert package.format == "esp" and package.metadata["producer"].startswith("espresso ")
    assert package.metadata["producer"] == "espresso " + espresso.__version__
    assert package.layer_count == lenet.layer_count and package.output_shapes == lenet.output_shapes


def test_precision(lenet):
    images, _ = mnist_test(8)
    reference = lenet.run({"data": images})["prob"]
    path = (str(LENET / "v2_format" / "lenet.prototxt"), str(LENET / "lenet_iter_10000.caffemodel"))
    # On the CPU no layer has an fp16 or bf16 kernel: each falls back to fp32, so the numbers are the same.
    half = espresso.load(*path, precision="fp16")
    assert half.precision == "fp16" and lenet.precision == "fp32"
    np.testing.assert_array_equal(half.run({"data": images})["prob"], reference)
    np.testing.assert_array_equal(lenet.session(precision="bf16").run({"data": images})["prob"], reference)
    with pytest.raises(espresso.UnsupportedError, match="strict precision"):
        espresso.load(*path, precision="bf16", strict=True).run({"data": images})
    with pytest.raises(espresso.UnsupportedError, match="strict precision"):
        lenet.session(precision="fp16", strict=True).run({"data": images})
    with pytest.raises(espresso.UnsupportedError, match="fp8"):
        espresso.load(*path, precision="fp8")


def test_store_reference(lenet, tmp_path, monkeypatch):
    """A model pushed to a registry (espresso store serve, on loopback) loads by its reference."""
    cli = pathlib.Path(os.environ.get("ESPRESSO_CLI", pathlib.Path(espresso.__file__).parent.parent / "bin" / "espresso"))
    if not cli.exists():
        pytest.skip(f"no espresso CLI at {cli} (set ESPRESSO_CLI) to serve a registry")
    lenet.save(str(tmp_path / "lenet.esp"))
    env = dict(os.environ, ESPRESSO_CACHE=str(tmp_path / "cache"))
    server = subprocess.Popen([str(cli), "store", "serve", "--root", str(tmp_path / "registry"),
                               "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        port = int(server.stdout.readline().split()[2].rsplit(":", 1)[1])
        reference = f"127.0.0.1:{port}/lenet:1"
        subprocess.run([str(cli), "push", str(tmp_path / "lenet.esp"), reference], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        monkeypatch.setenv("ESPRESSO_CACHE", str(tmp_path / "cache"))
        pulled = espresso.load(reference)
        with pytest.raises(espresso.StoreError, match="nothere"):
            espresso.load(f"127.0.0.1:{port}/nothere:1")
    finally:
        server.terminate()
        server.wait(timeout=30)
    images, _ = mnist_test(4)
    assert pulled.format == "esp" and pulled.name == lenet.name
    np.testing.assert_array_equal(pulled.run({"data": images})["prob"], lenet.run({"data": images})["prob"])
