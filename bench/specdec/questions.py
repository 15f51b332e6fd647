#!/usr/bin/env python3
"""bench/specdec/questions.py MANIFEST — the questions of a tests/data/shapes manifest.json as
bench_specdec's --questions TSV (file, question), on standard output."""
import json
import sys

for sc in json.load(open(sys.argv[1]))["scenes"]:
    for q in sc["questions"]:
        print(f"{sc['file']}\t{q['question']}")
