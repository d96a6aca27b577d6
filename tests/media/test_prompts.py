"""Prompts: saying values, the prompt set and its overrides, WAV uploads, the shipped files."""

from __future__ import annotations

import struct
import wave
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minipbx.media.g711 import PCMA, PCMU
from minipbx.media.player import read_wav, tone, wav_bytes
from minipbx.media.prompts import (
    COUNT_NOUNS,
    CURRENCIES,
    MAX_NUMBER,
    PACKAGE_DIR,
    PromptError,
    PromptSet,
    UnknownPromptError,
    beep,
    convert_upload,
    decode_wav,
    fade,
    is_custom_name,
    languages,
    normalize,
    override_dir,
    parse_prompt_list,
    remove_override,
    resample,
    save_override,
    say_amount,
    say_count,
    say_date,
    say_datetime,
    say_digits,
    say_duration,
    say_duration_minutes,
    say_number,
    say_ordinal,
    say_time,
    say_year,
    trim_silence,
)

EN_LIST = PACKAGE_DIR / "en" / "prompts.txt"
ENGLISH = parse_prompt_list(EN_LIST.read_text("utf-8"))


def known(words: list[str]) -> list[str]:
    """``words``, after checking each is a prompt of the English set."""
    missing = [w for w in words if w not in ENGLISH]
    assert not missing, f"no prompt for {missing}"
    return words


def spoken(words: list[str]) -> str:
    """The words as text (``num_3`` -> ``three``), to read the expectations easily."""
    return " ".join(ENGLISH[w] for w in known(words))


# -- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "zero"),
        (1, "one"),
        (10, "ten"),
        (11, "eleven"),
        (13, "thirteen"),
        (19, "nineteen"),
        (20, "twenty"),
        (21, "twenty one"),
        (40, "forty"),
        (99, "ninety nine"),
        (100, "one hundred"),
        (101, "one hundred and one"),
        (110, "one hundred and ten"),
        (115, "one hundred and fifteen"),
        (123, "one hundred and twenty three"),
        (200, "two hundred"),
        (999, "nine hundred and ninety nine"),
        (1000, "one thousand"),
        (1001, "one thousand and one"),
        (1010, "one thousand and ten"),
        (1099, "one thousand and ninety nine"),
        (1100, "one thousand one hundred"),
        (1101, "one thousand one hundred and one"),
        (2020, "two thousand and twenty"),
        (12_345, "twelve thousand three hundred and forty five"),
        (100_000, "one hundred thousand"),
        (100_001, "one hundred thousand and one"),
        (110_000, "one hundred and ten thousand"),
        (999_999, "nine hundred and ninety nine thousand nine hundred and ninety nine"),
        (1_000_000, "one million"),
        (1_000_001, "one million and one"),
        (1_000_100, "one million one hundred"),
        (1_001_000, "one million one thousand"),
        (
            1_234_567,
            "one million two hundred and thirty four thousand five hundred and sixty seven",
        ),
        (2_000_000_000, "two billion"),
        (-1, "minus one"),
        (-123, "minus one hundred and twenty three"),
    ],
)
def test_say_number(n: int, text: str) -> None:
    assert spoken(say_number(n)) == text


def _value(words: list[str]) -> int:
    """Read English number words back (an independent parser of the grammar)."""
    sign, total, group = 1, 0, 0
    scales = {"thousand": 10**3, "million": 10**6, "billion": 10**9}
    for word in words:
        if word == "minus":
            sign = -1
        elif word == "hundred":
            assert 1 <= group <= 9, words
            group *= 100
        elif word in scales:
            assert 1 <= group <= 999, words
            total, group = total + group * scales[word], 0
        elif word.startswith("num_"):
            assert group % 100 == 0 or int(word[4:]) < 10, words  # "twenty one", not "one one"
            group += int(word[4:])
        else:
            assert word == "and", words
    return sign * (total + group)


@given(st.integers(min_value=-MAX_NUMBER, max_value=MAX_NUMBER))
def test_say_number_reads_back(n: int) -> None:
    words = say_number(n)
    assert _value(known(words)) == n
    for i, word in enumerate(words):  # "and" after a hundred, or before the last part
        if word == "and":  # under a hundred after a thousand, million or billion
            rest = words[i + 1 :]
            assert words[i - 1] == "hundred" or (
                words[i - 1] in ("thousand", "million", "billion") and 0 < _value(rest) < 100
            ), words


def test_say_number_refuses() -> None:
    with pytest.raises(ValueError, match="too large"):
        say_number(MAX_NUMBER + 1)
    with pytest.raises(TypeError):
        say_number(True)
    with pytest.raises(TypeError):
        say_number(1.5)  # type: ignore[arg-type]


def test_say_digits() -> None:
    assert spoken(say_digits("+1 (555) 010-0*#")) == (
        "plus one five five five zero one zero zero star pound"
    )
    assert say_digits("") == []
    with pytest.raises(ValueError, match="'a'"):
        say_digits("12a")


def test_say_ordinal_and_year() -> None:
    assert spoken(say_ordinal(1)) == "first"
    assert spoken(say_ordinal(22)) == "twenty second"
    assert spoken(say_ordinal(31)) == "thirty first"
    for bad in (0, 32):
        with pytest.raises(ValueError):
            say_ordinal(bad)
    assert spoken(say_year(1999)) == "nineteen ninety nine"
    assert spoken(say_year(2005)) == "two thousand and five"
    assert spoken(say_year(2000)) == "two thousand"
    assert spoken(say_year(2025)) == "twenty twenty five"
    assert spoken(say_year(1900)) == "nineteen hundred"
    assert spoken(say_year(1905)) == "nineteen oh five"
    assert spoken(say_year(999)) == "nine hundred and ninety nine"


# -- money, counts, durations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        ("3.25", "USD", "three dollars and twenty five cents"),
        ("3", "USD", "three dollars"),
        ("3.00", "usd", "three dollars"),
        ("1", "USD", "one dollar"),
        ("1.01", "USD", "one dollar and one cent"),
        ("0.25", "USD", "twenty five cents"),
        ("0.01", "USD", "one cent"),
        ("0", "USD", "zero dollars"),
        ("0.999", "USD", "ninety nine cents"),  # truncated, never rounded up
        ("10.5", "USD", "ten dollars and fifty cents"),
        ("1234.5", "CAD", "one thousand two hundred and thirty four dollars and fifty cents"),
        ("-2.50", "USD", "minus two dollars and fifty cents"),
        ("-0.001", "USD", "zero dollars"),
        ("12", "EUR", "twelve euros"),
        ("1.10", "EUR", "one euro and ten cents"),
        ("1", "GBP", "one pound"),
        ("2.01", "GBP", "two pounds and one penny"),
        ("0.05", "GBP", "five pence"),
        ("3.25", "CHF", "three point two five"),
        ("3.05", "CHF", "three point zero five"),
        ("3", "CHF", "three"),
        (5, "USD", "five dollars"),
        (Decimal("7.1234"), "USD", "seven dollars and twelve cents"),
    ],
)
def test_say_amount(amount: Decimal | int | str, currency: str, text: str) -> None:
    assert spoken(say_amount(amount, currency)) == text


@pytest.mark.parametrize("bad", ["abc", Decimal("NaN"), "Infinity", ""])
def test_say_amount_refuses(bad: str | Decimal) -> None:
    with pytest.raises(ValueError, match="not an amount"):
        say_amount(bad)


def test_every_currency_and_noun_has_prompts() -> None:
    for words in CURRENCIES.values():
        known(list(words))
    known([*COUNT_NOUNS, *COUNT_NOUNS.values(), "new", "old", "no"])


def test_say_count() -> None:
    assert spoken(say_count(0, "message", "new")) == "no new messages"
    assert spoken(say_count(1, "message", "new")) == "one new message"
    assert spoken(say_count(2, "message", "old")) == "two old messages"
    assert spoken(say_count(21, "call")) == "twenty one calls"
    assert spoken(say_count(1, "minute")) == "one minute"
    with pytest.raises(ValueError, match="cannot count 'apple'"):
        say_count(2, "apple")
    with pytest.raises(ValueError, match="adjective"):
        say_count(2, "message", "urgent")
    with pytest.raises(ValueError, match="negative"):
        say_count(-1, "message")


def test_say_durations() -> None:
    assert spoken(say_duration_minutes(0)) == "zero minutes"
    assert spoken(say_duration_minutes(1)) == "one minute"
    assert spoken(say_duration_minutes(61)) == "sixty one minutes"
    assert spoken(say_duration(0)) == "zero seconds"
    assert spoken(say_duration(1)) == "one second"
    assert spoken(say_duration(60)) == "one minute"
    assert spoken(say_duration(61)) == "one minute and one second"
    assert spoken(say_duration(3600)) == "one hour"
    assert spoken(say_duration(3661)) == "one hour one minute and one second"
    assert spoken(say_duration(7325)) == "two hours two minutes and five seconds"
    assert spoken(say_duration(7200 + 5)) == "two hours and five seconds"
    for bad in (say_duration_minutes, say_duration):
        with pytest.raises(ValueError, match="negative"):
            bad(-1)


# -- dates and times -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "text"),
    [
        (time(0, 0), "twelve a.m."),
        (time(0, 30), "twelve thirty a.m."),
        (time(9, 5), "nine oh five a.m."),
        (time(11, 59), "eleven fifty nine a.m."),
        (time(12, 0), "twelve p.m."),
        (time(12, 10), "twelve ten p.m."),
        (time(14, 45), "two forty five p.m."),
        (time(23, 1), "eleven oh one p.m."),
    ],
)
def test_say_time(at: time, text: str) -> None:
    assert spoken(say_time(at)) == text


def test_say_datetime() -> None:
    when = datetime(2026, 3, 3, 14, 45)
    assert spoken(say_datetime(when)) == "on Tuesday March third at two forty five p.m."
    assert spoken(say_datetime(when, today=date(2026, 3, 3))) == "today at two forty five p.m."
    assert spoken(say_datetime(when, today=date(2026, 3, 4))) == "yesterday at two forty five p.m."
    assert spoken(say_datetime(when, today=date(2026, 3, 10))) == (
        "on Tuesday March third at two forty five p.m."
    )
    assert spoken(say_date(date(2025, 12, 31), today=date(2026, 3, 10))) == (
        "on Wednesday December thirty first twenty twenty five"
    )


def test_every_day_and_month_has_a_prompt() -> None:
    for offset in range(366):
        day = date(2024, 1, 1).toordinal() + offset
        known(say_date(date.fromordinal(day)))


# -- the prompt set --------------------------------------------------------------------------


def _tone_wav(frequency: float = 600.0, seconds: float = 0.2) -> bytes:
    return wav_bytes(tone(frequency, seconds))


def test_loads_the_package_prompts_once() -> None:
    prompts = PromptSet("en")
    assert "en" in languages()
    samples = prompts.get("num_7")
    assert samples.dtype == np.int16 and len(samples) > 800
    assert prompts.get("num_7") is samples  # decoded once
    assert not samples.flags.writeable  # shared: nobody may change it
    assert prompts.text("vm_enter_pin").startswith("Please enter your PIN")
    assert prompts.names() == sorted(ENGLISH)
    assert prompts.path("beep") == PACKAGE_DIR / "en" / "beep.wav"
    assert not prompts.is_custom("beep")


@pytest.mark.parametrize("name", ["nope", "../en/num_1", "NUM_1", "custom_missing", ""])
def test_unknown_prompt(name: str) -> None:
    prompts = PromptSet("en")
    with pytest.raises(UnknownPromptError, match="no prompt named") as caught:
        prompts.get(name)
    assert isinstance(caught.value, KeyError) and caught.value.status == 404
    assert repr(name) in str(caught.value)
    with pytest.raises(KeyError):
        prompts.path(name)
    assert name not in prompts


def test_unknown_language() -> None:
    for lang in ("xx", "../en", "EN"):
        with pytest.raises(PromptError, match="no prompts for language") as caught:
            PromptSet(lang)
        assert caught.value.status == 404
    with pytest.raises(PromptError, match="invalid language"):
        override_dir(Path("/data"), 1, "../x")
    assert override_dir(Path("/data"), 7, "en") == Path("/data/prompts/7/en")


def test_tenant_override_replaces_and_reverts(tmp_path: Path) -> None:
    directory = override_dir(tmp_path, 3, "en")
    prompts = PromptSet("en", directory)
    default = prompts.get("vm_enter_pin")
    assert prompts.names() == sorted(ENGLISH)  # no directory yet: fine
    save_override(directory, "vm_enter_pin", _tone_wav(600))
    assert prompts.is_custom("vm_enter_pin")
    assert prompts.path("vm_enter_pin") == directory / "vm_enter_pin.wav"
    assert np.array_equal(prompts.get("vm_enter_pin"), tone(600, 0.2))  # noticed, no reload
    save_override(directory, "vm_enter_pin", _tone_wav(900, 0.3))  # replaced again
    assert np.array_equal(prompts.get("vm_enter_pin"), tone(900, 0.3))
    assert [p.name for p in directory.iterdir()] == ["vm_enter_pin.wav"]  # no temporary left
    assert remove_override(directory, "vm_enter_pin")
    assert not remove_override(directory, "vm_enter_pin")
    assert np.array_equal(prompts.get("vm_enter_pin"), default)
    assert not prompts.is_custom("vm_enter_pin")
    other = PromptSet("en", override_dir(tmp_path, 4, "en"))
    save_override(directory, "goodbye", _tone_wav())
    assert not other.is_custom("goodbye")  # another tenant's recording


def test_reload_forgets_decoded_prompts(tmp_path: Path) -> None:
    prompts = PromptSet("en", tmp_path)
    first = prompts.get("goodbye")
    prompts.reload("goodbye")
    again = prompts.get("goodbye")
    assert again is not first and np.array_equal(again, first)
    prompts.reload()
    assert prompts.get("goodbye") is not again


def test_custom_prompts_of_a_tenant(tmp_path: Path) -> None:
    prompts = PromptSet("en", tmp_path)
    assert prompts.may_record("custom_sales") and not prompts.may_record("sales")
    assert is_custom_name("custom_sales") and not is_custom_name("custom_")
    save_override(tmp_path, "custom_sales", _tone_wav())
    (tmp_path / "stray.wav").write_bytes(_tone_wav())  # not a prompt name of ours: ignored
    assert "custom_sales" in prompts.names() and "stray" not in prompts.names()
    assert prompts.custom_names() == ["custom_sales"]
    assert prompts.text("custom_sales") == ""
    assert len(prompts.get("custom_sales")) == 1600
    assert not prompts.is_listed("custom_sales")
    remove_override(tmp_path, "custom_sales")
    with pytest.raises(UnknownPromptError):
        prompts.get("custom_sales")


def test_damaged_override_falls_back_to_the_default(tmp_path: Path) -> None:
    (tmp_path / "goodbye.wav").write_bytes(b"RIFF garbage")
    prompts = PromptSet("en", tmp_path)
    assert np.array_equal(prompts.get("goodbye"), PromptSet("en").get("goodbye"))


def test_missing_names_come_from_the_fallback_language(tmp_path: Path) -> None:
    for lang, entries in (("en", {"one": "one", "two": "two"}), ("de", {"one": "eins"})):
        (tmp_path / lang).mkdir()
        lines = "".join(f"{name}|{text}\n" for name, text in entries.items())
        (tmp_path / lang / "prompts.txt").write_text(lines)
        for i, name in enumerate(entries):
            (tmp_path / lang / f"{name}.wav").write_bytes(_tone_wav(300 + 100 * i))
    german = PromptSet("de", base=tmp_path)
    assert german.names() == ["one", "two"] and german.text("one") == "eins"
    assert german.path("two") == tmp_path / "en" / "two.wav"
    assert languages(tmp_path) == ["de", "en"]
    with pytest.raises(UnknownPromptError):
        PromptSet("de", base=tmp_path, fallback=None).get("two")


def test_concat_puts_gaps_between_prompts() -> None:
    prompts = PromptSet("en")
    words = say_number(21)
    parts = [prompts.get(w) for w in words]
    joined = prompts.concat(words, gap=0.1)
    assert len(joined) == sum(len(p) for p in parts) + 800
    assert np.array_equal(joined[: len(parts[0])], parts[0])
    assert not joined[len(parts[0]) : len(parts[0]) + 800].any()
    assert len(prompts.concat([])) == 0
    with pytest.raises(UnknownPromptError):
        prompts.concat(["num_1", "num_1000"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("beep\n", "1: expected name|text"),
        ("# c\n\nBad|x\n", "3: invalid prompt name 'Bad'"),
        ("custom_x|x\n", "invalid prompt name 'custom_x'"),
        ("a|\n", "a has no text"),
        ("a|x\nb|y\na|z\n", "3: a is listed twice"),
    ],
)
def test_prompt_list_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_prompt_list(text, "prompts.txt")


def test_prompt_list_respelling_for_the_synthesizer() -> None:
    text = "# comment\nvm_enter_pin | Enter your PIN. | Enter your pin.\nbeep|!tone 1000 500\n"
    assert parse_prompt_list(text) == {"vm_enter_pin": "Enter your PIN.", "beep": "!tone 1000 500"}
    spoken = parse_prompt_list(text, spoken=True)
    assert spoken == {"vm_enter_pin": "Enter your pin.", "beep": "!tone 1000 500"}
    assert ENGLISH["vm_enter_pin"] == "Please enter your PIN, followed by the pound key."


# -- the shipped files -----------------------------------------------------------------------


def test_every_listed_prompt_has_a_wav_of_the_prompt_format() -> None:
    directory = PACKAGE_DIR / "en"
    wavs = {p.stem for p in directory.glob("*.wav")}
    assert wavs == set(ENGLISH), "prompts.txt and the WAV files differ: run scripts/make-prompts"
    total = 0
    for name in ENGLISH:
        path = directory / f"{name}.wav"
        with wave.open(str(path), "rb") as wav:
            params = (wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getcomptype())
            assert params == (8000, 1, 2, "NONE"), f"{name}.wav is {params}"
        samples = read_wav(path.read_bytes(), name).astype(np.float64) / 32768
        peak = 20 * np.log10(np.abs(samples).max())
        assert -17 < peak <= -0.99, f"{name}.wav peaks at {peak:.1f} dBFS"
        assert 0.1 < len(samples) / 8000 < 10, name
        total += path.stat().st_size
    assert total < 3_000_000, f"English prompts take {total} bytes; keep them under 3 MB"


def test_the_beep_is_a_generated_tone() -> None:
    samples = PromptSet("en").get("beep").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) * 8000 / len(samples) == pytest.approx(1000, abs=5)
    assert len(samples) == 4000


def test_the_services_prompts_exist() -> None:
    names = (
        "vm_person_at_extension vm_not_available vm_record_message vm_enter_pin you_have "
        "message vm_received from vm_message_menu vm_message_deleted vm_message_saved "
        "vm_no_more_messages goodbye card_enter_number card_enter_pin card_invalid "
        "your_balance_is dollars cents card_enter_destination insufficient_balance "
        "call_cannot_complete card_locked invalid_option call_transferring call_busy "
        "call_no_answer ivr_enter_extension call_one_minute_left beep am pm oh"
    )
    known(names.split())


# -- uploads ---------------------------------------------------------------------------------


def riff(fmt: bytes, body: bytes, *, extra: bytes = b"", data_size: int | None = None) -> bytes:
    """A RIFF/WAVE file with a format chunk, ``extra`` chunks, then the data chunk."""
    size = len(body) if data_size is None else data_size
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra
    chunks += b"data" + struct.pack("<I", size) + body + b"\x00" * (len(body) & 1)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def fmt_chunk(code: int, channels: int, rate: int, bits: int, *, extensible: bool = False) -> bytes:
    align = channels * bits // 8
    head = struct.pack(
        "<HHIIHH", 0xFFFE if extensible else code, channels, rate, rate * align, align, bits
    )
    if not extensible:
        return head
    guid = struct.pack("<H", code) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    return head + struct.pack("<HHI", 22, bits, 3 if channels == 2 else 4) + guid


def sine(
    rate: int, seconds: float = 0.5, frequency: float = 440.0, amplitude: float = 0.5
) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(round(rate * seconds)) / rate)


def encode(signal: np.ndarray, code: int, bits: int) -> bytes:
    """Interleaved float samples in a WAV encoding."""
    if code == 3:
        return signal.astype("<f4" if bits == 32 else "<f8").tobytes()
    if code in (6, 7):
        pcm = np.round(signal * 32767).astype(np.int16)
        return (PCMA if code == 6 else PCMU).encode(pcm)
    if bits == 8:
        return np.round(signal * 127 + 128).astype(np.uint8).tobytes()
    if bits == 24:
        ints = np.round(signal * (2**23 - 1)).astype("<i4").tobytes()
        return b"".join(ints[i : i + 3] for i in range(0, len(ints), 4))
    return np.round(signal * (2 ** (bits - 1) - 1)).astype("<i2" if bits == 16 else "<i4").tobytes()


def assert_is_the_sine(
    samples: np.ndarray, seconds: float = 0.5, amplitude: float = 0.5, tolerance: float = 0.01
) -> None:
    assert samples.dtype == np.int16
    assert abs(len(samples) - seconds * 8000) <= 1
    expected = sine(8000, len(samples) / 8000, amplitude=amplitude)
    error = np.abs(samples / 32768 - expected)[100:-100].max()  # the edges ring a little
    assert error < tolerance, f"off by {error:.4f} of full scale"


@pytest.mark.parametrize(
    ("code", "bits", "rate", "extensible", "tolerance"),
    [
        (1, 16, 8000, False, 1e-4),
        (1, 8, 8000, False, 0.01),
        (1, 24, 8000, False, 1e-4),
        (1, 32, 8000, False, 1e-4),
        (3, 32, 8000, False, 1e-4),
        (3, 64, 8000, False, 1e-4),
        (7, 8, 8000, False, 0.02),
        (6, 8, 8000, False, 0.02),
        (1, 16, 16000, False, 1e-3),
        (1, 16, 22050, False, 1e-3),
        (1, 16, 44100, False, 1e-3),
        (1, 16, 48000, False, 1e-3),
        (1, 16, 11025, False, 1e-3),
        (1, 24, 96000, True, 1e-3),
        (3, 32, 44100, True, 1e-3),
        (7, 8, 16000, True, 0.02),
    ],
)
def test_converts_every_supported_form(
    code: int, bits: int, rate: int, extensible: bool, tolerance: float
) -> None:
    data = riff(
        fmt_chunk(code, 1, rate, bits, extensible=extensible), encode(sine(rate), code, bits)
    )
    samples, info = decode_wav(data)
    assert (info.rate, info.bits, info.channels) == (rate, bits, 1)
    assert_is_the_sine(samples, tolerance=tolerance)
    assert np.array_equal(read_wav(convert_upload(data)), samples)


def test_sixteen_bit_eight_khz_mono_is_kept_bit_exact() -> None:
    samples = tone(1000, 0.3, level=-3.0)
    converted = convert_upload(wav_bytes(samples))
    assert converted == wav_bytes(samples)


def test_g711_is_decoded_by_the_tables() -> None:
    codes = bytes(range(256))
    for code, codec in ((7, PCMU), (6, PCMA)):
        samples, info = decode_wav(riff(fmt_chunk(code, 1, 8000, 8), codes))
        assert info.encoding == ("mu-law" if code == 7 else "A-law")
        assert np.array_equal(samples, codec.decode(codes))


def test_stereo_is_mixed_down() -> None:
    left = sine(44100)
    both = np.stack([left, np.zeros_like(left)], axis=1).reshape(-1)  # right channel silent
    samples, info = decode_wav(riff(fmt_chunk(1, 2, 44100, 16), encode(both, 1, 16)))
    assert info.channels == 2 and str(info) == "44100 Hz 16-bit PCM 2 ch"
    assert_is_the_sine(samples, amplitude=0.25, tolerance=1e-3)
    wide = np.stack([sine(48000)] * 2, axis=1).reshape(-1)
    samples, _ = decode_wav(riff(fmt_chunk(3, 2, 48000, 32, extensible=True), encode(wide, 3, 32)))
    assert len(samples) == 4000


def test_other_chunks_odd_sizes_and_streamed_lengths() -> None:
    body = encode(sine(8000), 1, 16)
    listed = riff(fmt_chunk(1, 1, 8000, 16), body, extra=b"LIST\x03\x00\x00\x00abc\x00")
    assert_is_the_sine(decode_wav(listed)[0], tolerance=1e-4)
    streamed = riff(fmt_chunk(1, 1, 8000, 16), body, data_size=0xFFFFFFFF)
    assert_is_the_sine(decode_wav(streamed)[0], tolerance=1e-4)
    odd = riff(fmt_chunk(1, 1, 8000, 16), body + b"\x01")  # half a sample at the end: dropped
    assert len(decode_wav(odd)[0]) == 4000
    wild = riff(
        fmt_chunk(3, 1, 8000, 32), np.array([np.nan, np.inf, -np.inf, 2.0], "<f4").tobytes()
    )
    assert decode_wav(wild)[0].tolist() == [0, 32767, -32768, 32767]


GOOD = riff(fmt_chunk(1, 1, 8000, 16), encode(sine(8000), 1, 16))


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 400, "the file is empty"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00 an mp3", 415, "looks like an MP3 file"),
        (b"\xff\xfb\x90\x64" + b"\x00" * 100, 415, "MP3"),
        (b"OggS\x00\x02" + b"\x00" * 50, 415, "Ogg"),
        (b"fLaC\x00\x00\x00\x22" + b"\x00" * 50, 415, "FLAC"),
        (
            b"hello, this is a text file\n",
            415,
            r"not a WAV file \(RIFF header missing\); upload a WAV file, e\.g\. 8 kHz 16-bit mono",
        ),
        (b"RIFF\x24\x00\x00\x00AVI LIST", 415, "not of type WAVE"),
        (b"RIFF\x24\x00\x00", 400, "truncated WAV file"),
        (b"RIFF\x24\x00\x00\x00WAVE", 400, "no format"),
        (GOOD[:30], 400, "truncated WAV file: the format chunk"),
        (GOOD[:36], 400, "no audio data chunk"),
        (
            GOOD[:1000],
            400,
            "truncated WAV file: the audio data chunk declares 8000 bytes, only 956",
        ),
        (riff(fmt_chunk(1, 1, 8000, 16), b""), 400, "contains no audio"),
        (riff(fmt_chunk(0x11, 1, 8000, 4), b"\x00" * 100), 415, "IMA ADPCM"),
        (riff(fmt_chunk(0x1234, 1, 8000, 16), b"\x00" * 100), 415, "format code 0x1234"),
        (riff(fmt_chunk(1, 1, 8000, 12), b"\x00" * 100), 415, "12-bit PCM"),
        (riff(fmt_chunk(1, 1, 8000, 16)[:12], b"\x00" * 100), 400, "format chunk is too short"),
        (riff(fmt_chunk(1, 0, 8000, 16), b"\x00" * 100), 400, "0 channels"),
        (riff(fmt_chunk(1, 1, 100, 16), b"\x00" * 100), 400, "at 100 Hz"),
        (
            riff(fmt_chunk(1, 2, 8000, 16)[:12] + b"\x02\x00\x10\x00", b"\x00" * 100),
            400,
            "block size 2",
        ),
        (
            riff(fmt_chunk(7, 1, 8000, 8), bytes(8000 * 301)),
            413,
            r"too long \(5 min 1 s, at most 5 minutes\)",
        ),
        (b"RIFF" + bytes(20 * 1024 * 1024), 413, r"too large \(20\.0 MB, at most 20 MB\)"),
    ],
)
def test_refuses_with_a_clear_message(data: bytes, status: int, message: str) -> None:
    with pytest.raises(PromptError, match=message) as caught:
        convert_upload(data)
    assert caught.value.status == status
    assert "upload a WAV file" in str(caught.value)


def test_refuses_an_unknown_extensible_subformat() -> None:
    fmt = fmt_chunk(1, 1, 8000, 16, extensible=True)
    fmt = fmt[:26] + b"\xff" * 14  # not the standard KSDATAFORMAT GUID
    with pytest.raises(PromptError, match="unsupported WAV encoding") as caught:
        convert_upload(riff(fmt, b"\x00" * 100))
    assert caught.value.status == 415


# -- signal processing -----------------------------------------------------------------------


def test_resample_keeps_the_band_and_removes_aliases() -> None:
    for rate in (11025, 16000, 22050, 44100, 48000, 96000, 6000):
        out = resample(sine(rate, 1.0, 1000), rate, 8000)
        assert len(out) == 8000
        assert np.abs(out - sine(8000, 1.0, 1000))[200:-200].max() < 1e-3, rate
    alias = resample(sine(48000, 1.0, 6000), 48000, 8000)  # above 4 kHz: must vanish
    assert np.abs(alias[200:-200]).max() < 1e-3
    assert len(resample(np.zeros(0), 44100, 8000)) == 0


def test_trim_normalize_fade_beep() -> None:
    quiet = np.zeros(800, dtype=np.int16)
    speech = tone(300, 0.5, level=-30.0)
    trimmed = trim_silence(np.concatenate([quiet, speech, quiet]))
    assert len(speech) + 158 <= len(trimmed) <= len(speech) + 160  # 10 ms kept each side
    assert len(trim_silence(quiet)) == 0
    level = normalize(speech).astype(np.float64) / 32768
    assert 20 * np.log10(np.sqrt((level**2).mean())) == pytest.approx(-19.0, abs=0.1)
    loud_peak = normalize(
        np.concatenate([tone(300, 0.5, level=-40.0), tone(300, 0.001, level=-1.0)])
    )
    assert np.abs(loud_peak).max() <= 32768 * 10 ** (-1 / 20) + 1  # peaks capped at -1 dBFS
    assert np.array_equal(normalize(quiet), quiet)
    faded = fade(np.full(1000, 10000, dtype=np.int16))
    assert faded[0] == 0 and faded[-1] < 300 and faded[500] == 10000
    tone_ = beep(1000, 0.5).astype(np.float64) / 32768
    assert 20 * np.log10(np.abs(tone_).max()) == pytest.approx(-16.0, abs=0.1)
