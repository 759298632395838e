"""rill.engine.detokenize: UTF-8-safe incremental text and stop-string holdback."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rill.engine.detokenize import Detokenizer, StopMatcher

# A small alphabet (1- to 4-byte characters) makes stop strings occur, overlap and share prefixes.
SMALL = ["a", "b", " ", "\n", "é", "€", "😀"]
CHARS = st.sampled_from(SMALL) | st.characters(exclude_categories=("Cs",), exclude_characters="\ufffd")


@st.composite
def case(draw):
    """(text, stops, byte pieces): stops are random, cut from the text or continue its tail;
    pieces split the UTF-8 bytes anywhere, including inside multi-byte characters."""
    text = draw(st.text(CHARS, max_size=40))
    stop = st.text(st.sampled_from(SMALL), min_size=1, max_size=4)
    if text:
        substring = st.tuples(st.integers(0, len(text) - 1), st.integers(1, 6)).map(
            lambda t: text[t[0] : t[0] + t[1]])
        # a stop that starts with the text's tail: held back until finish() flushes it
        extends_tail = st.tuples(st.integers(1, 3), st.sampled_from(SMALL)).map(
            lambda t: text[-t[0] :] + t[1])
        stop = stop | substring | extends_tail
    stops = draw(st.lists(stop, min_size=1, max_size=4))
    data = text.encode()
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=len(data))))
    bounds = [0, *(c for c in cuts if 0 < c < len(data)), len(data)]
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    return text, tuple(stops), pieces


def _decoded_after(text: str, num_bytes: int) -> str:
    """The whole characters of `text` within its first num_bytes UTF-8 bytes."""
    out, used = [], 0
    for ch in text:
        used += len(ch.encode())
        if used > num_bytes:
            break
        out.append(ch)
    return "".join(out)


def _held_back(visible: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of visible that is a proper prefix of a stop string."""
    return max((k for s in stops for k in range(1, len(s)) if visible.endswith(s[:k])), default=0)


@settings(deadline=None, max_examples=300)
@given(case())
def test_stream_emits_exactly_the_text_before_the_first_stop_and_nothing_of_it(args):
    text, stops, pieces = args
    det = Detokenizer(stops)
    emitted, history, seen_bytes, matched = "", [], 0, False
    for piece in pieces:
        delta, matched = det.push(piece)
        seen_bytes += len(piece)
        # (d) valid input gives whole characters only: no U+FFFD, encodable text
        assert "\ufffd" not in delta
        delta.encode("utf-8")
        emitted += delta
        history.append(emitted)
        visible = _decoded_after(text, seen_bytes)  # what the model has generated so far
        if matched:
            # (a) the first stop completed in this piece: everything before its earliest start
            first = min(i for i in (visible.find(s) for s in stops) if i >= 0)
            assert emitted == visible[:first]
            break
        # no stop yet: everything is out except the longest possible start of a stop
        assert not any(s in visible for s in stops)
        assert emitted == visible[: len(visible) - _held_back(visible, stops)]
    if not matched:
        # (b) nothing lost: the held text is flushed at the end
        emitted += det.finish()
        assert emitted == text
        assert not any(s in text for s in stops)
    else:
        assert any(s in text for s in stops)
        starts = [i for i in (text.find(s) for s in stops) if i >= 0]
        ends = [i + len(s) for s in stops for i in range(len(text)) if text.startswith(s, i)]
        # the cut is at a stop's start, no earlier than the earliest one, and before the
        # stop that completes first (later text was never generated)
        assert len(emitted) in {i for s in stops for i in range(len(text)) if text.startswith(s, i)}
        assert min(starts) <= len(emitted) <= min(ends)
    # (a, c) the client never sees any stop text, and nothing emitted is ever taken back
    assert not any(s in emitted for s in stops)
    assert all(emitted.startswith(h) for h in history)


@settings(deadline=None)
@given(case())
def test_one_piece_stops_at_the_earliest_occurrence_of_any_stop(args):
    text, stops, _ = args
    det = Detokenizer(stops)
    out, matched = det.push(text.encode())
    starts = [i for i in (text.find(s) for s in stops) if i >= 0]
    if starts:
        assert matched and out == text[: min(starts)]
    else:
        assert not matched and out + det.finish() == text


def _run(stops: tuple[str, ...], pieces: list[bytes]) -> list[tuple[str, bool]]:
    det = Detokenizer(stops)
    return [det.push(p) for p in pieces]


def test_stop_spanning_several_tokens_is_held_back_then_dropped():
    assert _run(("END",), [b"hello E", b"N", b"D and more"]) == [("hello ", False), ("", False), ("", True)]


def test_stop_at_the_very_start_emits_nothing():
    assert _run(("STOP",), [b"STOP", b"after"])[0] == ("", True)
    assert _run(("<|",), [b"<", b"|x"]) == [("", False), ("", True)]


def test_stop_that_is_a_prefix_of_another_wins_as_soon_as_it_completes():
    for stops in (("ab", "abc"), ("abc", "ab")):
        assert _run(stops, [b"xa", b"b", b"c"])[:2] == [("x", False), ("", True)]


def test_earliest_start_wins_among_stops_completed_by_the_same_piece():
    assert _run(("cd", "bcde", "b"), [b"abcdef"]) == [("a", True)]


def test_held_prefix_is_released_when_the_text_diverges():
    assert _run(("END",), [b"the E", b"N", b"x"]) == [("the ", False), ("", False), ("ENx", False)]


def test_held_prefix_is_flushed_by_finish_when_no_stop_matched():
    det = Detokenizer(("END",))
    assert det.push(b"the EN") == ("the ", False)
    assert det.finish() == "EN"


def test_without_stops_text_passes_straight_through():
    assert _run((), [b"<|im_end|>", b" END"]) == [("<|im_end|>", False), (" END", False)]


def test_empty_stop_strings_are_ignored():
    matcher = StopMatcher(("", "zz"))
    assert matcher.push("abc") == ("abc", False)
    assert matcher.push("z") == ("", False)
    assert matcher.flush() == "z"


def test_flush_empties_the_held_text():
    matcher = StopMatcher(("abc",))
    assert matcher.push("xab") == ("x", False)
    assert matcher.flush() == "ab"
    assert matcher.flush() == ""


def test_invalid_utf8_bytes_become_replacement_characters_instead_of_raising():
    det = Detokenizer()
    assert det.push(b"a\xffb") == ("a\ufffdb", False)
    assert det.push(b"\x80") == ("\ufffd", False)
    assert det.push(b"ok") == ("ok", False)


def test_character_cut_off_by_the_end_of_generation_is_dropped():
    det = Detokenizer(("zz",))
    assert det.push(b"xz\xe2\x82") == ("x", False)
    assert det.finish() == "z"  # held stop prefix flushed; the partial euro sign dropped


def test_four_byte_emoji_split_into_single_bytes_comes_out_whole_on_its_last_byte():
    det = Detokenizer()
    pieces = [bytes([b]) for b in "😀".encode()]
    assert len(pieces) == 4
    assert [det.push(p) for p in pieces] == [("", False), ("", False), ("", False), ("😀", False)]
    assert det.finish() == ""


def test_split_multibyte_stop_string_matches_across_pieces():
    data = "wait€stop".encode()
    cut = data.index("€".encode()) + 1  # inside the 3-byte euro sign
    assert _run(("€",), [data[:cut], data[cut:]]) == [("wait", False), ("", True)]


# ---- stop strings end where tool-call markup begins --------------------------------------------

MARK = "<tool_call>\n"


@settings(max_examples=300, deadline=None)
@given(before=st.text("ab<\n", max_size=12), after=st.text("ab<\n", max_size=12),
       cuts=st.lists(st.integers(0, 40), max_size=8))
def test_stop_strings_are_only_looked_for_before_the_marker(before, after, cuts):
    stops = ("\n", "b<")
    text = before + MARK + after
    marker = text.find(MARK)
    hits = [i for i in (text.find(s) for s in stops) if 0 <= i < marker]
    bounds = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    matcher = StopMatcher(stops, until=MARK)
    emitted, matched = "", False
    for a, b in zip(bounds, bounds[1:]):
        out, matched = matcher.push(text[a:b])
        emitted += out
        if matched:
            break
    if not matched:
        emitted += matcher.flush()
    assert (emitted, matched) == ((text[: min(hits)], True) if hits else (text, False))
