"""bench/benchjson.py — the result file of ../shared/BENCH.md, shared by the report scripts of
bench/sparse and bench/specdec: one result row, and the document around the rows."""
import datetime
import json
import os


def result(case, metric, value, baseline, baseline_value, higher_is_better, **extra):
    """One row: value against the baseline measured in the same run; ratio > 1 is the better side."""
    if not baseline_value or not value:
        ratio = None
    else:
        ratio = round(value / baseline_value if higher_is_better else baseline_value / value, 3)
    row = {"case": case, "metric": metric, "value": value, "baseline": baseline, "baseline_value": baseline_value,
           "ratio": ratio, "higher_is_better": higher_is_better}
    row.update(extra)
    return row


def command(script, keys):
    """The command line of a result: the script and the settings of `keys` the environment gives."""
    return script + " (" + " ".join(f"{k}={os.environ[k]}" for k in keys if os.environ.get(k)) + ")"


def write(out, bench, machine, command, results, notes):
    """The document (today's date) to OUT."""
    doc = {"bench": bench, "date": datetime.date.today().isoformat(), "machine": machine, "command": command,
           "results": results, "notes": notes}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    return doc
