"""The transport against a scripted peer: broken connections mid-stream lose track of nothing."""

from __future__ import annotations

from types import ModuleType

import pytest

from omniq_fast import Client, ConnectionLost, PublishManyError, ReplyError
from peers import ScriptedServer, scripted  # noqa: F401  (fixture)

OK_BATCH = b"*2\r\n$2\r\nOK\r\n$1\r\n5\r\n"


@pytest.mark.parametrize("scripted", [[OK_BATCH] * 3 + [None]], indirect=True)
def test_broken_stream_reports_written_and_unknown_ids(
    scripted: ScriptedServer, core: ModuleType
) -> None:
    with Client(scripted.url, _core=core) as c:
        with pytest.raises(PublishManyError) as info:
            c.publish_many("q", ({"i": i} for i in range(50)), batch_size=5)
    err = info.value
    assert isinstance(err.__cause__, ConnectionLost)
    # Three batches answered OK; the fourth broke the connection with the fifth (window 2)
    # possibly on the wire too: their outcome is unknown; the rest was never sent.
    assert len(err.written) == 15
    assert 5 <= len(err.unknown) <= 10
    assert not set(err.written) & set(err.unknown)
    assert scripted.evalshas == 4


@pytest.mark.parametrize("scripted", [[None]], indirect=True)
def test_broken_single_call_is_connection_lost(scripted: ScriptedServer, core: ModuleType) -> None:
    with Client(scripted.url, _core=core) as c:
        with pytest.raises(ConnectionLost) as info:
            c.ack_success_many("q", [("a", "t")])
    assert "unknown" in str(info.value)


@pytest.mark.parametrize(
    "scripted", [[b"-ERR something broke\r\n", b"*1\r\n$5\r\nWHAT?\r\n"]], indirect=True
)
def test_error_and_malformed_batch_replies(scripted: ScriptedServer, core: ModuleType) -> None:
    with Client(scripted.url, _core=core) as c:
        with pytest.raises(ReplyError, match="something broke"):
            c.reserve_many("q", 3)
        with pytest.raises(Exception) as info:
            c.reserve_many("q", 3)
        assert type(info.value).__name__ == "ProtocolError"
