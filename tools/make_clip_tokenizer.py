"""Write SD 1.5's CLIP tokenizer files (vocab.json, merges.txt) from CLIP's BPE table.

CLIP's byte-pair-encoding table (``bpe_simple_vocab_16e6.txt.gz``, MIT, OpenAI)
is the source of both files that ``transformers.CLIPTokenizer`` reads. It is on
PyPI inside ``open_clip_torch``; this script reads it from that wheel (or any
copy of the ``.gz``) and builds the vocabulary the way CLIP's own
``SimpleTokenizer`` does: the 256 byte characters, the same with ``</w>``, every
merge joined, then ``<|startoftext|>`` and ``<|endoftext|>`` (49408 tokens).

    pip download open_clip_torch --no-deps -d /tmp/oc
    python tools/make_clip_tokenizer.py /tmp/oc/open_clip_torch-*.whl

writes facefix/data/sd15/tokenizer/{vocab.json,merges.txt}. ``--check`` then
compares token ids with open_clip's SimpleTokenizer (needs ``ftfy`` and
``regex`` importable, e.g. ``pip install --target DIR ftfy`` and PYTHONPATH=DIR).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import zipfile
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "facefix" / "data" / "sd15" / "tokenizer"
BPE_NAME = "open_clip/bpe_simple_vocab_16e6.txt.gz"
#: CLIP keeps the first 49152 - 256 - 2 merges of the table (its SimpleTokenizer).
N_MERGES = 49152 - 256 - 2

PROMPTS = [
    "a photo of sks person",
    "a close-up portrait photo of sks person, detailed skin, 85mm",
    "Hello, World!!! -- (weird) punctuation: ;:'\"?/\\|@#$%^&*_+=~`<>[]{}",
    "naïve café résumé — “quotes” ‘single’ … ünïcödé",
    "東京の写真 한국어 Ελληνικά русский العربية",
    "emoji 😀👍🏽 and numbers 1234567890 3.14 1e-5",
    "   multiple    spaces\tand\ttabs\nnew lines   ",
    "UPPER lower MiXeD it's don't we're I'll",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "",
]


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible byte-to-printable-character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def read_table(source: Path) -> list[str]:
    """The merge lines (``"i n"``) of CLIP's BPE table, from the ``.gz`` or a wheel holding it."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            data = gzip.decompress(wheel.read(BPE_NAME))
    else:
        data = gzip.decompress(source.read_bytes())
    lines = data.decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]  # the first line is the table's header
    if len(merges) != N_MERGES or any(len(m.split()) != 2 for m in merges):
        raise SystemExit(f"{source}: not CLIP's BPE table (expected {N_MERGES} merge lines of two symbols)")
    return merges


def build(merges: list[str]) -> dict[str, int]:
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens) or len(vocab) != 49408:
        raise SystemExit(f"the vocabulary has {len(vocab)} distinct tokens of {len(tokens)}; CLIP's has 49408")
    return vocab


def write(merges: list[str], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    vocab = build(merges)
    (target / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")) + "\n",
                                       encoding="utf-8")
    (target / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def check(source: Path, target: Path) -> int:
    """Compare token ids of the written files (transformers) with open_clip's SimpleTokenizer."""
    import importlib.util
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(source) as wheel:
            wheel.extract("open_clip/tokenizer.py", tmp)
            wheel.extract(BPE_NAME, tmp)
        spec = importlib.util.spec_from_file_location("oc_tokenizer", Path(tmp) / "open_clip" / "tokenizer.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        reference = module.SimpleTokenizer(bpe_path=str(Path(tmp) / BPE_NAME))
        ours = CLIPTokenizer.from_pretrained(target.parent / "tokenizer")
        written = json.loads((target / "vocab.json").read_text(encoding="utf-8"))
        merges = (target / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
        # open_clip renamed CLIP's two special tokens; OpenAI's CLIP and transformers use these names.
        renamed = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
        expected = {renamed.get(token, token): i for token, i in reference.encoder.items()}
        bad = int(written != expected) + int([tuple(m.split()) for m in merges] != list(reference.bpe_ranks))
        print(f"vocabulary ({len(written)}) and merge ranks ({len(merges)}) "
              f"{'identical to' if not bad else 'DIFFER from'} open_clip's")
        # open_clip cleans text with ftfy (curly quotes become straight ones) before its BPE;
        # transformers does not, so both are fed the cleaned text: the files are what is compared.
        for prompt in PROMPTS:
            want = [reference.sot_token_id, *reference.encode(prompt), reference.eot_token_id]
            got = ours(module.basic_clean(prompt)).input_ids
            same = want == got
            bad += not same
            print(f"{'same' if same else 'DIFF'} {len(got):3d} tokens  {prompt[:60]!r}")
            if not same:
                print(f"   open_clip: {want}\n   ours:      {got}")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="open_clip_torch wheel, or bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--target", type=Path, default=TARGET)
    parser.add_argument("--check", action="store_true", help="compare ids with open_clip's SimpleTokenizer (wheel only)")
    args = parser.parse_args()
    write(read_table(args.source), args.target)
    print(f"wrote {args.target}/vocab.json and merges.txt")
    return check(args.source, args.target) if args.check else 0


if __name__ == "__main__":
    sys.exit(main())
