"""The HTTP server: keep-alive, pipelining, limits, timeouts and strict request
validation, against the real binary over real sockets."""

import resource
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import BIN
from rawhttp import closed_by_peer, connect, exchange, read_response, read_responses

GET = b"GET /hub/health HTTP/1.1\r\nHost: x\r\n\r\n"

# Each request must be refused with the status given, and the connection closed.
MALFORMED = [
    ("bare CR in header", b"GET /hub/health HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400),
    ("bare LF line end", b"GET /hub/health HTTP/1.1\nHost: x\n\n", 400),
    ("obs-fold", b"GET /hub/health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
    ("space before colon", b"GET /hub/health HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n", 400),
    ("TE with space before colon",
     b"POST /hub/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("CL and TE", b"POST /hub/login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("duplicate CL", b"POST /hub/login HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
     b"Content-Length: 1\r\n\r\nab", 400),
    ("CL list", b"POST /hub/login HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\na", 400),
    ("negative CL", b"POST /hub/login HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    ("CL with sign", b"POST /hub/login HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\na", 400),
    ("huge CL", b"POST /hub/login HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
    ("bad chunk size", b"POST /hub/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"zz\r\nab\r\n0\r\n\r\n", 400),
    ("chunk size with space", b"POST /hub/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"2 \r\nab\r\n0\r\n\r\n", 400),
    ("chunk size overflow", b"POST /hub/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"fffffffffffffffffff1\r\nab\r\n0\r\n\r\n", 400),
    ("chunk without CRLF after data", b"POST /hub/login HTTP/1.1\r\nHost: x\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n", 400),
    ("TE gzip", b"POST /hub/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("TE obfuscated", b"POST /hub/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501),
    ("missing Host", b"GET /hub/health HTTP/1.1\r\n\r\n", 400),
    ("two Hosts", b"GET /hub/health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("NUL in header", b"GET /hub/health HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400),
    ("bad request line", b"GET  /hub/health HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("header name with slash", b"GET /hub/health HTTP/1.1\r\nHost: x\r\nX/Y: a\r\n\r\n", 400),
]


@pytest.mark.parametrize("name,raw,status", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request_is_refused_and_server_keeps_serving(hub, name, raw, status):
    with connect(hub) as s:
        s.sendall(raw)
        res = read_response(s)
        assert res is not None, "no response"
        got = res[0]
        if status in (501, 505):
            assert got in (400, status), got
        else:
            assert got == status, (got, res[2])
        assert res[1].get("connection") == "close"
        # Nothing after the error is processed: the connection is closed.
        try:
            s.sendall(GET)
        except OSError:
            pass
        assert closed_by_peer(s)
    # The server is still fine for everyone else.
    assert requests.get(hub.url + "/hub/health", timeout=5).status_code == 200


def test_smuggled_second_request_never_runs(hub):
    """A CL.TE attempt: the would-be smuggled request must not be answered."""
    raw = (b"POST /hub/login HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /hub/api HTTP/1.1\r\nHost: x\r\n\r\n")
    with connect(hub) as s:
        s.sendall(raw)
        res = read_responses(s, 2, timeout=2)
        assert [r[0] for r in res] == [400]


def test_keep_alive_and_pipelining_in_order(hub):
    paths = [b"/hub/health", b"/hub/api", b"/hub/nowhere", b"/hub/health"]
    raw = b"".join(b"GET " + p + b" HTTP/1.1\r\nHost: x\r\n\r\n" for p in paths)
    with connect(hub) as s:
        s.sendall(raw)
        res = read_responses(s, len(paths))
        assert [r[0] for r in res] == [200, 200, 404, 200]
        assert b'"version"' in res[1][2]
        # Still open for more.
        s.sendall(GET)
        assert read_response(s)[0] == 200


def test_pipelined_requests_split_across_writes(hub):
    raw = GET * 3
    with connect(hub) as s:
        for i in range(0, len(raw), 7):
            s.sendall(raw[i:i + 7])
            time.sleep(0.001)
        assert [r[0] for r in read_responses(s, 3)] == [200, 200, 200]


def test_http10_closes_unless_keep_alive(hub):
    with connect(hub) as s:
        s.sendall(b"GET /hub/health HTTP/1.0\r\n\r\n")
        status, headers, _ = read_response(s)
        assert status == 200
        assert closed_by_peer(s)
    with connect(hub) as s:
        s.sendall(b"GET /hub/health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = read_response(s)
        assert headers.get("connection", "").lower() == "keep-alive"
        s.sendall(b"GET /hub/health HTTP/1.0\r\n\r\n")
        assert read_response(s)[0] == 200


def test_head_size_limit(hub):
    big = b"X-Big: " + b"a" * 40000 + b"\r\n"
    res = exchange(hub, b"GET /hub/health HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    assert res[0] == 431


def test_header_count_limit(hub):
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    res = exchange(hub, b"GET /hub/health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert res[0] == 431


def test_url_length_limit(hub):
    res = exchange(hub, b"GET /hub/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert res[0] == 414


def test_body_size_limit(make_hub):
    hub = make_hub("http:\n  max_body_size: 1k\n")
    body = b"a" * 2000
    res = exchange(hub, b"POST /hub/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + body)
    assert res[0] == 413
    chunked = b"7d0\r\n" + body + b"\r\n0\r\n\r\n"
    res = exchange(hub, b"POST /hub/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + chunked)
    assert res[0] == 413


def test_expect_100_continue(hub):
    with connect(hub) as s:
        s.sendall(b"POST /hub/api/users HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        s.settimeout(5)
        first = s.recv(100)
        assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"{}")
        rest = first[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        data = rest
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        assert data.startswith(b"HTTP/1.1 401")


def test_chunked_request_body_is_read(hub):
    body = b'{"x": 1}'
    chunked = b"3\r\n" + body[:3] + b"\r\n" + b"%x;ext=1\r\n" % (len(body) - 3) + body[3:] + b"\r\n0\r\n\r\n"
    res = exchange(hub, b"POST /hub/api/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + chunked)
    assert res[0] == 401  # body fully read, then refused for lack of credentials


def test_head_timeout_answers_408(make_hub):
    hub = make_hub("http:\n  head_timeout: 1\n")
    with connect(hub) as s:
        s.sendall(b"GET /hub/health HTTP/1.1\r\nHo")
        res = read_response(s, timeout=5)
        assert res is not None and res[0] == 408
        assert closed_by_peer(s)


def test_body_timeout_answers_408(make_hub):
    hub = make_hub("http:\n  body_timeout: 1\n")
    with connect(hub) as s:
        s.sendall(b"POST /hub/login HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        res = read_response(s, timeout=5)
        assert res is not None and res[0] == 408


def test_idle_keep_alive_connection_is_closed(make_hub):
    hub = make_hub("http:\n  idle_timeout: 1\n")
    with connect(hub) as s:
        s.sendall(GET)
        assert read_response(s)[0] == 200
        start = time.time()
        assert closed_by_peer(s, timeout=5)
        assert time.time() - start < 4.5


def test_slowloris_does_not_block_others(make_hub):
    hub = make_hub("http:\n  head_timeout: 2\n")
    slow = []
    for _ in range(50):
        s = connect(hub)
        s.sendall(b"GET /hub/health HTTP/1.1\r\n")
        slow.append(s)
    assert requests.get(hub.url + "/hub/health", timeout=5).status_code == 200
    for s in slow:
        s.close()


def test_bad_path_encoding_is_400(hub):
    res = exchange(hub, b"GET /hub/%2e%2e/%2fetc HTTP/1.1\r\nHost: x\r\n\r\n")
    assert res[0] == 400


def test_survives_emfile(tmp_path, make_hub):
    """With a low descriptor limit, connections beyond it are dropped, not fatal."""
    hub = make_hub(start=False)
    env = hub.env

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    hub.log_file = open(hub.log_path, "ab")
    hub.proc = subprocess.Popen(
        [BIN, "serve", *hub.args(), "--bind", f"127.0.0.1:{hub.port}"],
        stdout=hub.log_file, stderr=subprocess.STDOUT, env=env, preexec_fn=limit)
    hub.wait_ready()
    socks = []
    try:
        for _ in range(120):
            try:
                socks.append(socket.create_connection(("127.0.0.1", hub.port), timeout=2))
            except OSError:
                break
        time.sleep(0.5)
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    assert hub.proc.poll() is None, hub.log()
    assert requests.get(hub.url + "/hub/health", timeout=5).status_code == 200


def test_graceful_shutdown_finishes_in_flight_request(hub):
    with connect(hub) as s:
        s.sendall(b"POST /hub/api/users HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n{}")
        time.sleep(0.3)
        hub.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # New connections are refused once the listener is closed.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", hub.port), timeout=1).close()
        s.sendall(b"  ")
        res = read_response(s)
        assert res[0] == 401
        assert res[1].get("connection") == "close"
    assert hub.proc.wait(timeout=10) == 0


def test_concurrent_clients(hub):
    errors = []

    def worker():
        try:
            with requests.Session() as sess:
                for _ in range(50):
                    if sess.get(hub.url + "/hub/health", timeout=5).status_code != 200:
                        errors.append("status")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
