"""Streaming a labelled file: rows a second and peak memory of open_labelled + rows().

    python benchmarks/stream.py [--rows 1000000] [--file PATH] [--gzip] [--gbk] [--compare]

Writes a synthetic CSV of short reviews (about 150 bytes a row: 1,000,000 rows are about
150 MB; with --gbk, Chinese reviews in GBK, whose encoding the reader detects) unless
--file names one, then in a fresh process of its own times open_labelled
(the pass over the bytes and the header) and a full rows() pass, and prints the kernel's
maxrss of that process before and after. --compare does the same for load_dataset.
"""

from __future__ import annotations

import argparse
import gzip
import random
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = ("the film was good bad great awful plot actors music long short boring moving "
         "funny slow scene ending story characters camera dialogue").split()
CHINESE = ("房间 干净 服务 很好 位置 不错 早餐 太差 性价比 很高 推荐 隔音 效果 晚上 很吵 前台 "
           "热情 设施 陈旧 交通 方便 床 舒服 卫生间 有点 小 价格 合理 下次 还来").split()

PROBE = r"""
import resource, sys, time
from rnncli.data import dataset, stream
kib = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
before, start = kib(), time.perf_counter()
if sys.argv[2] == "stream":
    s = stream.open_labelled(sys.argv[1])
    opened = time.perf_counter()
    rows = sum(1 for _ in s.rows())
else:
    opened = start
    rows = len(dataset.load_dataset(sys.argv[1]).texts)
end = time.perf_counter()
print(f"{sys.argv[2]:>12}: {rows} rows; open {opened - start:.2f} s, rows {end - opened:.2f} s "
      f"({rows / (end - opened):,.0f} rows/s), total {end - start:.2f} s "
      f"({rows / (end - start):,.0f} rows/s); maxrss {before / 1024:.0f} -> {kib() / 1024:.0f} MB")
"""


def write_rows(path: Path, rows: int, *, zipped: bool, gbk: bool = False) -> None:
    rng = random.Random(0)
    opener = gzip.open if zipped else open
    words, sep = (CHINESE, "") if gbk else (WORDS, " ")
    with opener(path, "wt", encoding="gbk" if gbk else "utf-8", newline="") as fh:
        fh.write("text,label\n")
        for _ in range(rows):
            text = sep.join(rng.choices(words, k=rng.randint(18, 30)))
            fh.write(f"\"{text}, really\",{rng.choice(('pos', 'neg'))}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--file", type=Path)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--gbk", action="store_true", help="Chinese reviews, in GBK")
    parser.add_argument("--compare", action="store_true", help="also time load_dataset")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file
        if path is None:
            path = Path(tmp) / ("rows.csv.gz" if args.gzip else "rows.csv")
            write_rows(path, args.rows, zipped=args.gzip, gbk=args.gbk)
        print(f"{path}: {path.stat().st_size / 1e6:.0f} MB on disk")
        for how in ("stream", "load_dataset") if args.compare else ("stream",):
            subprocess.run([sys.executable, "-c", PROBE, str(path), how], check=True)


if __name__ == "__main__":
    main()
