"""Reconciliation at scale: N journal rows against an N-line clearing file, N = 10k, 100k, 1M.

    python benchmarks/recon.py [--sizes 10000,100000,1000000] [--keep DIR] [--json]

For each size a journal is made in a temporary folder with the host's own
schema (Journal), holding N card and QR payments of one business date over
200 terminals and the two built-in merchants, about 3 % of them reversed or
voided. The date is cut over for real (settlement states, fees, batches,
settlement CSV and our clearing file), and the practice generator writes the
channel's clearing file with a few discrepancies of every clearing class.
Then `possim recon run` does its work in a child process of its own, so its
peak resident memory (ru_maxrss) is that of the reconciliation alone.

Reported per size: the set-up times (journal fill, cut-over, practice file),
the reconciliation's wall time, rows/s (journal rows matched per second of
it) and peak memory, and the ratios between sizes, which show how the cost
grows. Aim (issue 7): 1M rows in ≤ 20 s and ≤ 2 GB. Figures, not a verdict:
the exit status says only whether every run found exactly what was injected.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from possim.acquirer.journal import Journal, Transaction
from possim.settlement.jobs import run_cutover, run_make_file

DAY = "2026-06-15"
NOW = datetime(2026, 6, 16, 0, 5)
MERCHANTS = ("898310048160001", "898310048160002")
INJECT = "missing=20,amount=20,duplicate=20,unknown=20,status=20,fee=20"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fill_journal(path: Path, rows: int, seed: int = 7) -> float:
    """N payment rows straight into the journal's transactions table (the host's schema, its own columns)."""
    started = time.perf_counter()
    journal = Journal(path, rng=random.Random(seed))
    db = journal.connection
    rng = random.Random(seed)
    columns = [f for f in Transaction.__dataclass_fields__ if f != "id"]
    insert = f"INSERT INTO transactions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

    def row(i: int) -> tuple:
        qr = i % 5 == 0
        status = "approved"
        roll = rng.random()
        if roll < 0.02:
            status = "reversed"
        elif roll < 0.03:
            status = "voided"
        tid = f"{10000001 + i % 200:08d}"
        values = dict(
            business_date=DAY, terminal_id=tid, merchant_id=MERCHANTS[i % 2], stan=f"{i % 1000000:06d}",
            key_date="0615", mti="0200", processing_code="930000" if qr else "000000", amount=rng.randint(100, 500000),
            currency="156", pan_masked=None if qr else "622848******" + f"{i % 10000:04d}", pan_hash=None,
            entry_mode="021", response_code="00", auth_code=f"{i % 1000000:06d}", rrn=f"{616600000000 + i:012d}",
            status=status, decline_step=None, decline_reason=None, account_id=None, posted_amount=0,
            fingerprint=f"{i:x}", response_mti="0210", response_fields=None, created_at=f"{DAY}T10:00:00.000",
            updated_at=f"{DAY}T10:00:00.000", kind="qr_sale" if qr else "sale", batch_number="000001",
            channel="wechat" if qr else None, wallet_txn_id=f"WX{i:016d}" if qr else None, refunded_amount=0,
        )
        return tuple(values.get(c) for c in columns)

    db.execute("BEGIN")
    db.executemany(insert, (row(i) for i in range(rows)))
    db.execute("COMMIT")
    journal.close()
    return time.perf_counter() - started


def prepare(folder: Path, rows: int) -> dict[str, float]:
    journal = folder / "journal.sqlite"
    fill = fill_journal(journal, rows)
    started = time.perf_counter()
    cut = run_cutover(journal, DAY, out=folder / "settlement", clock=lambda: NOW)
    cutover = time.perf_counter() - started
    if cut.failed:
        raise SystemExit(f"cut-over of {rows} rows failed an invariant")
    started = time.perf_counter()
    made = run_make_file(journal, DAY, "clearing", INJECT, 1, folder / "channel-clearing.txt")
    practice = time.perf_counter() - started
    (folder / "expected.json").write_text(json.dumps(made["expected"]))
    return {"fill_s": fill, "cutover_s": cutover, "practice_s": practice, "file_lines": made["records"]}


RECON_CHILD = """
import json, resource, sys, time
from datetime import datetime
from pathlib import Path
from possim.settlement.jobs import run_recon
folder = Path(sys.argv[1])
started = time.perf_counter()
result = run_recon(folder / "journal.sqlite", sys.argv[2], [("clearing", folder / "channel-clearing.txt")],
                   out=folder / "recon", clock=lambda: datetime(2026, 6, 16, 1, 0))
wall = time.perf_counter() - started
found = {c["class"]: c["count"] for c in result.summary["classes"] if c["count"]}
print(json.dumps({"wall_s": wall, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "found": found, "verdict": result.summary["verdict"]}))
"""


def reconcile(folder: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", RECON_CHILD, str(folder), DAY], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"recon run failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--keep", help="Leave the journals and files in this folder.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    ok = True
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(args.keep) if args.keep else Path(scratch)
        for rows in sizes:
            folder = base / f"rows-{rows}"
            folder.mkdir(parents=True)
            log(f"{rows:>9,} rows: filling the journal, cutting over, writing the channel's file ...")
            setup = prepare(folder, rows)
            log(f"{rows:>9,} rows: reconciling ...")
            run = reconcile(folder)
            expected = json.loads((folder / "expected.json").read_text())
            found_right = run["found"] == expected
            ok = ok and found_right
            results.append({"rows": rows, **setup, **run, "rows_per_s": rows / run["wall_s"], "found_as_injected": found_right})
            log(f"{rows:>9,} rows: {run['wall_s']:.2f} s, {rows / run['wall_s']:,.0f} rows/s, peak {run['peak_mb']:.0f} MB,"
                f" found as injected: {found_right}")
    for before, after in zip(results, results[1:]):
        after["time_ratio_to_previous"] = after["wall_s"] / before["wall_s"]
        after["rows_ratio_to_previous"] = after["rows"] / before["rows"]
    if args.json:
        print(json.dumps({"results": results}))
    else:
        print(f"{'rows':>10} {'fill s':>7} {'cut-over s':>10} {'file s':>7} {'recon s':>8} {'rows/s':>10} {'peak MB':>8}"
              f" {'× time':>7}  found as injected")
        for r in results:
            ratio = f"{r['time_ratio_to_previous']:.1f}" if "time_ratio_to_previous" in r else "-"
            print(f"{r['rows']:>10,} {r['fill_s']:>7.1f} {r['cutover_s']:>10.1f} {r['practice_s']:>7.1f} {r['wall_s']:>8.2f}"
                  f" {r['rows_per_s']:>10,.0f} {r['peak_mb']:>8.0f} {ratio:>7}  {r['found_as_injected']}")
        print("aim: 1,000,000 rows in ≤ 20 s and ≤ 2,048 MB peak (time ratio ≈ 10 per 10× rows is linear)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
