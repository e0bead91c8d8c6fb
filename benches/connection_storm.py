"""Connection storms against a running server: ROUNDS times, N idle HTTP/2 connections
(the preface and an empty SETTINGS frame, nothing more) from spread-out loopback addresses,
held for HOLD seconds, then closed; prints the server's RSS (from /proc) at each peak, after
each round and 10, 30 and 60 s after the last. The figures in docs/operations.md.

    python3 benches/connection_storm.py PORT SERVER_PID N ROUNDS HOLD

Lift the per-address cap (--max-connections-per-address 0) to storm past 1,000 connections,
and raise the open-file limit (ulimit -n) above N.
"""
import asyncio, sys, time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return -1

async def one(port, hold, index):
    try:
        source = f"127.0.{1 + index // 20000}.{1 + (index // 250) % 250}"
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(PREFACE)
        await writer.drain()
        await asyncio.sleep(hold)
        writer.close()
        return True
    except OSError:
        return False

async def main(port, pid, n, rounds, hold):
    print("start", rss(pid), "MB", flush=True)
    for r in range(rounds):
        tasks = [asyncio.create_task(one(port, hold, i)) for i in range(n)]
        await asyncio.sleep(hold * 0.8)
        peak = rss(pid)
        ok = sum(await asyncio.gather(*tasks))
        await asyncio.sleep(1)
        print(f"round {r}: {ok} connected, peak {peak} MB, after close {rss(pid)} MB", flush=True)
    for wait in (10, 30, 60):
        await asyncio.sleep(wait - (0 if wait == 10 else (10 if wait == 30 else 30)))
        print(f"{wait}s after: {rss(pid)} MB", flush=True)

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])))
