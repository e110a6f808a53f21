"""A stand-in for code-server that accepts and never answers (test_faults.py).

Started by the local spawner with code-server's arguments; only `--socket PATH` matters.
It listens on that Unix socket, answers `GET /healthz` (so the readiness probe, and any
later health check of the hub, sees a live server) and reads every other request to the
end of its head, then keeps the connection open without ever answering. Each such request
is counted in the file named by the environment variable SILENT_COUNT_FILE, when set (one
line per request), so a test can see that the hub did forward it."""

import os
import socket
import sys
import threading


def socket_path(argv):
    for i, arg in enumerate(argv):
        if arg == "--socket" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--socket="):
            return arg.split("=", 1)[1]
    sys.exit("silent_upstream: no --socket given")


HELD = []


def serve(conn, count_file):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            conn.close()
            return
        data += chunk
    line = data.split(b"\r\n", 1)[0]
    if line.startswith(b"GET /healthz "):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        conn.close()
        return
    if count_file:
        with open(count_file, "a") as f:
            f.write(line.decode("latin-1") + "\n")
    # Never answer, never close: the hub's response timeout is all that ends this.
    HELD.append(conn)


def main():
    path = socket_path(sys.argv[1:])
    count_file = os.environ.get("SILENT_COUNT_FILE", "")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o600)
    srv.listen(128)
    print(f"silent_upstream listening on {path}", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, count_file), daemon=True).start()


if __name__ == "__main__":
    main()
