"""Sample a process's resident memory until told to stop (SIGUSR1) or it exits; write the peak.

VmHWM alone would do, but sampling also records when the peak happened relative to the run.
usage: peakmem.py PID OUT.json
"""
import json
import signal
import sys
import time


def rss_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main() -> None:
    pid, out = int(sys.argv[1]), sys.argv[2]
    stop = []
    signal.signal(signal.SIGUSR1, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    peak = hwm = 0
    while not stop:
        try:
            peak = max(peak, rss_kib(pid, "VmRSS"))
            hwm = rss_kib(pid, "VmHWM")
        except FileNotFoundError:
            break
        time.sleep(0.05)
    with open(out, "w") as f:
        json.dump({"pid": pid, "peak_rss_mib": round(peak / 1024, 1),
                   "vmhwm_mib": round(hwm / 1024, 1)}, f)


if __name__ == "__main__":
    main()
