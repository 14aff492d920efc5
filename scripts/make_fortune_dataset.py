#!/usr/bin/python3
"""Language identification data from Debian's fortune packages.

Reads the installed fortune files of each language (fortunes, fortunes-de, -es, -it, -br, -pl, -cs,
-eo, -ga), keeps the first 100 characters of every fortune (whitespace collapsed; fortunes with fewer
than 20 letters are dropped), removes duplicates and splits by fortune: a fortune's text decides its
split (one in ten goes to the held-out set), so a fortune that appears twice never lands on both sides.
Writes OUT/train.tsv and OUT/test.tsv (`language<TAB>text`), for `espresso convert-data --format text`.

Usage: scripts/make_fortune_dataset.py OUT_DIR [--per-language N]   (N: cap on training fortunes
per language, default 3000, so that no language dominates and CPU training stays short)
"""
import argparse
import hashlib
import random
import re
import subprocess
import sys
from pathlib import Path

PACKAGES = {"en": "fortunes", "de": "fortunes-de", "es": "fortunes-es", "it": "fortunes-it", "br": "fortunes-br",
            "pl": "fortunes-pl", "cs": "fortunes-cs", "eo": "fortunes-eo", "ga": "fortunes-ga"}
LENGTH = 100


def fortune_files(package):
    listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if listing.returncode != 0:
        sys.exit(f"{package} is not installed (apt-get install {package})")
    for line in listing.stdout.split("\n"):
        path = Path(line)
        if (line.startswith("/usr/share/games/fortunes/") and path.suffix not in (".dat", ".u8")
                and path.is_file() and not path.is_symlink()):
            yield path


def fortunes(path):
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    for block in re.split(r"^%\s*$", text, flags=re.M):
        block = " ".join(block.split())
        if sum(ch.isalpha() for ch in block) >= 20:
            yield block[:LENGTH]


def held_out(text):
    return hashlib.sha1(text.encode("utf-8")).digest()[0] % 10 == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--per-language", type=int, default=3000)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    train, test = [], []
    for language, package in PACKAGES.items():
        texts = sorted({t for f in fortune_files(package) for t in fortunes(f)})
        rest = [t for t in texts if not held_out(t)]
        kept_test = [t for t in texts if held_out(t)]
        rng.shuffle(rest)
        rng.shuffle(kept_test)
        rest = rest[:args.per_language]
        # The held-out set keeps the same share of each language as the training set.
        kept_test = kept_test[:max(1, len(rest) // 9)]
        train += [(language, t) for t in rest]
        test += [(language, t) for t in kept_test]
        print(f"{language}: {len(texts)} fortunes, {len(rest)} train, {len(kept_test)} held out")
    rng.shuffle(train)
    for name, rows in (("train.tsv", train), ("test.tsv", test)):
        with open(out / name, "w", encoding="utf-8") as f:
            for language, text in rows:
                f.write(f"{language}\t{text}\n")
    print(f"{len(train)} train, {len(test)} held out in {out}")


if __name__ == "__main__":
    main()
