"""What the `lmlab serve` client checks share (check_openai_client.py, check_page_chromium.py):
starting the server on an ephemeral loopback port, and printing one ok/FAIL line per check."""

import subprocess


def start_server(lmlab, args):
    """Starts `lmlab serve --port 0 ARGS`; returns the process and its base URL."""
    cmd = [lmlab, "serve", "--port", "0"] + args
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("lmlab serve: listening on "):
            return proc, line.split("listening on ")[1].strip()
    raise SystemExit(f"lmlab serve did not start: {' '.join(cmd)}")


def check(what, ok, detail=""):
    """Prints the check's line; exits 1 when it failed."""
    print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail and not ok else ''}")
    if not ok:
        raise SystemExit(1)
