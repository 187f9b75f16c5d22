"""The SPDY/3 codec and the token cache, on their own (no daemon)."""

from __future__ import annotations

import hashlib
import struct
import time
import zlib

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.streaming import spdy
from criruntime.streaming.remotecommand import status_json
from criruntime.streaming.tokens import TokenCache


def test_dictionary_is_the_spdy3_one() -> None:
    # The draft's 1423-byte dictionary; a single wrong byte breaks every client's headers.
    assert len(spdy.DICTIONARY) == 1423
    digest = hashlib.sha256(spdy.DICTIONARY).hexdigest()
    assert digest == "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"


def test_header_blocks_round_trip_across_one_zlib_stream() -> None:
    blocks = [
        {"streamtype": ["error"]},
        {"streamtype": ["data"], "port": ["8080"], "requestid": ["0"]},
        {"multi": ["a", "b"]},
        {},
    ]
    # Each block is decoded by one long-lived decompressor, as the peer's state carries over.
    sender, receiver = spdy.HeaderCodec(), spdy.HeaderCodec()
    for headers in blocks:
        assert receiver.decode(sender.encode(headers)) == headers


def test_header_block_errors_are_protocol_errors() -> None:
    with pytest.raises(spdy.ProtocolError):
        spdy.HeaderCodec().decode(b"not zlib at all")
    with pytest.raises(spdy.ProtocolError):
        spdy.parse_header_block(struct.pack(">II", 1, 100) + b"short")
    bomb = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, spdy.DICTIONARY)
    data = bomb.compress(b"\0" * (spdy.MAX_HEADER_BLOCK * 4)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(spdy.ProtocolError, match="larger than"):
        spdy.HeaderCodec().decode(data)


def test_frames_have_the_draft_layout() -> None:
    frame = spdy.control_frame(spdy.PING, 0, struct.pack(">I", 5))
    assert frame == bytes.fromhex("80030006 00000004 00000005".replace(" ", ""))
    data = spdy.data_frame(3, spdy.FLAG_FIN, b"hi")
    assert data == bytes.fromhex("00000003 01000002".replace(" ", "")) + b"hi"


def test_status_json_is_what_kubectl_decodes() -> None:
    import json

    assert json.loads(status_json(0, None)) == {"metadata": {}, "status": "Success"}
    failed = json.loads(status_json(2, None))
    assert failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]
    broken = json.loads(status_json(None, "boom"))
    assert broken["status"] == "Failure" and broken["message"] == "boom"


def test_tokens_are_single_use_kind_bound_and_expire() -> None:
    cache = TokenCache(ttl=0.2)
    request = api.ExecRequest(container_id="c", cmd=["true"], stdout=True)
    token = cache.insert("exec", request)
    assert len(token) >= 20 and token != cache.insert("exec", request)
    assert cache.consume("attach", token) is None
    assert cache.consume("exec", token) == request
    assert cache.consume("exec", token) is None
    late = cache.insert("exec", request)
    time.sleep(0.3)
    assert cache.consume("exec", late) is None
    assert len(cache) == 0
