"""A tiny raw-socket HTTP client for tests that must send bytes no library would."""

import socket
import time


def connect(hub, timeout=5):
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=timeout)
    return s


def read_response(sock, timeout=5):
    """Reads one response (head + Content-Length body). Returns (status, headers, body)
    or None when the peer closed before a status line."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None if not data else _parse(data)
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status, headers = _head(head)
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def read_responses(sock, count, timeout=5):
    """Reads `count` pipelined responses from one socket."""
    out = []
    buf = b""
    sock.settimeout(timeout)
    deadline = time.time() + timeout
    while len(out) < count and time.time() < deadline:
        while b"\r\n\r\n" in buf:
            head, _, rest = buf.partition(b"\r\n\r\n")
            status, headers = _head(head)
            length = int(headers.get("content-length", "0"))
            if len(rest) < length:
                break
            out.append((status, headers, rest[:length]))
            buf = rest[length:]
            if len(out) == count:
                return out
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return out


def _head(head):
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


def _parse(data):
    head, _, body = data.partition(b"\r\n\r\n")
    status, headers = _head(head)
    return status, headers, body


def closed_by_peer(sock, timeout=5):
    """True when the server closes the connection (EOF or reset) within timeout."""
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def exchange(hub, raw, timeout=5):
    """Sends raw bytes on a new connection; returns (status, headers, body) or None."""
    with connect(hub, timeout) as s:
        s.sendall(raw)
        return read_response(s, timeout)
