"""Version names: the one validator, and new names that sort in creation order."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugbox_server.errors import USAGE, PlugboxError
from plugbox_server.names import is_version_name, new_version_name, validate_version

UTC = timezone.utc


@pytest.mark.parametrize("name", [
    "20261121T090000Z",
    "20261121T090000Z.001",
    "20261121T090000Z.999",
    "19990101T000000Z",
])
def test_a_version_name_is_accepted_unchanged(name):
    assert is_version_name(name)
    assert validate_version(name) == name


@pytest.mark.parametrize("name", [
    "",
    " ",
    "live",
    "previous",
    "next",
    ".",
    "..",
    "../20261121T090000Z",
    "20261121T090000Z/..",
    "/etc",
    "/srv/svc/deploy/20261121T090000Z",
    "deploy/20261121T090000Z",
    "20261121T090000Z/",
    "./20261121T090000Z",
    "20261121T090000Z\n",
    "20261121T090000Z\nrm -rf /",
    "\n20261121T090000Z",
    " 20261121T090000Z",
    "20261121T090000Z ",
    "20261121 090000Z",
    "20261121t090000Z",
    "20261121T090000z",
    "20261121T090000",
    "20261121T0900Z",
    "20261121",
    "20261121T090000Z.1",
    "20261121T090000Z.0001",
    "20261121T090000Z.",
    "20261121T090000Z.abc",
    "20261121T090000.001Z",
    "261121T090000Z",
    "20261121T090000Z; rm -rf ~",
    "-20261121T090000Z",
    ".removing-20261121T090000Z",
    ".new-20261121T090000Z",
    "2026-11-21T090000Z",
    # the extended form, with its colons, is not a name
    "2026-11-21T09:00:00Z",
    # digits of another script match \d unless the pattern is ASCII-only
    "\u0662\u0660\u0662\u06661121T090000Z",
    "20261121T09000\uff10Z",
])
def test_anything_else_is_refused_with_one_line(name):
    assert not is_version_name(name)
    with pytest.raises(PlugboxError) as caught:
        validate_version(name)
    error = caught.value
    assert error.code == USAGE  # a name that cannot be one is bad usage, before any look at deploy/
    text = f"plugbox: {error}"
    assert "\n" not in text and "\r" not in text
    assert "is not a version name" in text
    assert "a name is YYYYMMDDTHHMMSSZ, such as 20261121T090000Z" in text
    assert "plugbox status" in text  # the next step


@pytest.mark.parametrize("name", ["2026-11-21T09:00:00", "2026-11-21T09:00:00.001"])
def test_the_old_form_with_colons_is_refused_with_what_a_name_is_now(name):
    with pytest.raises(PlugboxError) as caught:
        validate_version(name)
    assert str(caught.value) == (
        f"'{name}' is not a version name (the old form with colons): "
        "a name is YYYYMMDDTHHMMSSZ, such as 20261121T090000Z; "
        "see `plugbox status` for the versions")


def name_of(second: datetime, suffix: int) -> str:
    return second.strftime("%Y%m%dT%H%M%SZ") + (f".{suffix:03d}" if suffix else "")


@st.composite
def names_and_a_clock(draw) -> tuple[set[str], datetime]:
    """A clock reading, in any zone (whole minutes, up to 14 h off UTC), and a set of
    existing names: some of the very seconds around it (the clock behind, at or
    ahead of the newest name), some anywhere within a year, each with or without a
    suffix, the last ones (.998, .999) included."""
    instant = draw(st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2098, 12, 31),
                                timezones=st.just(UTC)))
    minutes = draw(st.integers(min_value=-14 * 60, max_value=14 * 60))
    now = instant.astimezone(timezone(timedelta(minutes=minutes)))
    second = instant.replace(microsecond=0)
    offsets = st.integers(min_value=-2, max_value=2) | st.integers(min_value=-10**7, max_value=10**7)
    suffixes = st.sampled_from([0, 1, 998, 999]) | st.integers(min_value=0, max_value=999)
    existing = draw(st.sets(
        st.builds(lambda offset, suffix: name_of(second + timedelta(seconds=offset), suffix),
                  offsets, suffixes),
        max_size=20))
    return existing, now


@given(names_and_a_clock())
def test_every_new_name_has_no_colon_sorts_after_every_name_and_is_valid(names_and_clock):
    """Whatever names exist and whatever the clock reads, in whatever zone: the new name
    goes on PATH (PATH, PYTHONPATH, venv and rsync's host:path all split on ':'), sorts
    after every existing name, and both sides' validator takes it unchanged."""
    existing, now = names_and_clock
    newest = max(existing, default="")
    try:
        name = new_version_name(existing, now)
    except PlugboxError as error:
        # The one refusal: the second to add a suffix to has used up .001 to .999.
        second = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        assert newest.endswith(".999") and second <= newest, (existing, now, error)
        return
    assert ":" not in name, name
    assert all(name > old for old in existing), (name, sorted(existing)[-3:])
    assert is_version_name(name)
    assert validate_version(name) == name


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)),
       st.booleans())
def test_any_name_in_the_old_colon_form_is_refused_naming_the_new_form(when, milliseconds):
    old = when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{when.microsecond // 1000:03d}" if milliseconds else "")
    assert not is_version_name(old)
    with pytest.raises(PlugboxError) as caught:
        validate_version(old)
    assert caught.value.code == USAGE
    assert str(caught.value) == (
        f"'{old}' is not a version name (the old form with colons): "
        "a name is YYYYMMDDTHHMMSSZ, such as 20261121T090000Z; "
        "see `plugbox status` for the versions")


def test_the_refusal_names_the_bad_name():
    with pytest.raises(PlugboxError) as caught:
        validate_version("../etc")
    assert "'../etc'" in str(caught.value)


@pytest.mark.parametrize("name, shown", [
    ("a\nb", r"'a\nb'"),
    ("a\\b", r"'a\\b'"),
    ("\x1b[2J", r"'\x1b[2J'"),
    ("caf\u00e9", r"'caf\xe9'"),
])
def test_the_refusal_shows_the_name_escaped_once(name, shown):
    with pytest.raises(PlugboxError) as caught:
        validate_version(name)
    assert str(caught.value).startswith(f"{shown} is not a version name")


# --- new names ------------------------------------------------------------------

NOON = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def test_a_new_name_is_the_current_utc_second():
    assert new_version_name([], NOON.replace(microsecond=654321)) == "20261121T120000Z"


def test_a_new_name_is_in_utc_whatever_the_clock_zone():
    paris = timezone(timedelta(hours=1))
    assert new_version_name([], datetime(2026, 11, 21, 13, 0, 0, tzinfo=paris)) == \
        "20261121T120000Z"


def test_the_same_second_gives_suffixes_in_order():
    first = new_version_name([], NOON)
    second = new_version_name([first], NOON)
    third = new_version_name([first, second], NOON)
    assert (first, second, third) == (
        "20261121T120000Z", "20261121T120000Z.001", "20261121T120000Z.002")


def test_a_clock_behind_the_newest_name_still_gives_a_name_after_it():
    existing = ["20261121T120000Z", "20261121T120005Z.003"]
    name = new_version_name(existing, NOON - timedelta(days=3))
    assert name == "20261121T120005Z.004"
    assert name > max(existing)


def test_a_later_second_drops_the_suffix():
    existing = ["20261121T120000Z", "20261121T120000Z.001"]
    assert new_version_name(existing, NOON + timedelta(seconds=1)) == "20261121T120001Z"


def test_a_suffixed_name_sorts_before_the_next_second():
    assert "20261121T120000Z.999" < "20261121T120001Z"


def test_the_thousandth_version_in_one_second_is_refused():
    existing = ["20261121T120000Z.999"]
    with pytest.raises(PlugboxError) as caught:
        new_version_name(existing, NOON)
    assert "20261121T120000Z" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_without_a_clock_the_name_is_now():
    before = datetime.now(UTC).replace(microsecond=0)
    name = new_version_name([])
    after = datetime.now(UTC)
    assert is_version_name(name)
    made = datetime.strptime(name, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= made <= after


clocks = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
    timezones=st.just(UTC),
)


@given(st.lists(clocks, min_size=1, max_size=60))
def test_a_sequence_of_new_names_is_strictly_increasing(readings):
    """Whatever the clock does (stand still, jump back, jump ahead), names keep order."""
    names: list[str] = []
    for now in readings:
        name = new_version_name(names, now)
        assert is_version_name(name)
        names.append(name)
    assert names == sorted(names)
    assert len(set(names)) == len(names)


@given(st.lists(clocks, min_size=2, max_size=30), st.randoms(use_true_random=False))
def test_names_follow_creation_order_even_after_removals(readings, random):
    """Removing versions in between never lets a new name sort before a kept one."""
    existing: list[str] = []
    for now in readings:
        name = new_version_name(existing, now)
        assert all(name > kept for kept in existing)
        existing.append(name)
        if random.random() < 0.3:
            existing.remove(random.choice(existing))


def test_string_order_is_creation_order_across_a_same_second_burst():
    # three deploys in one second, then one in the next
    names: list[str] = []
    for now in (NOON, NOON, NOON, NOON + timedelta(seconds=1)):
        names.append(new_version_name(names, now))
    assert names == ["20261121T120000Z", "20261121T120000Z.001", "20261121T120000Z.002",
                     "20261121T120001Z"]
    assert sorted(names) == names


@given(st.lists(st.one_of(
    st.text(alphabet="0123456789TZ.", min_size=14, max_size=21),
    st.from_regex(r"\d{8}T\d{6}Z(\.\d{3})?", fullmatch=True),
    st.text(max_size=22)), max_size=30))
def test_version_names_of_many_is_is_version_name_of_each(candidates):
    from plugbox_server.names import version_names

    assert sorted(version_names(candidates)) == sorted(n for n in candidates if is_version_name(n))
