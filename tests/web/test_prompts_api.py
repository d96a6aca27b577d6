"""Prompt recordings over the REST API and the console: list, listen, upload (converted),
refusals with their messages, revert to the default, tenant isolation."""

from __future__ import annotations

import re
import struct
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from minipbx.media.player import read_wav, tone, wav_bytes
from minipbx.media.prompts import PACKAGE_DIR, override_dir
from minipbx.web import WebContext
from minipbx.web.middleware import CSP
from tests.web.conftest import API, Tenants
from tests.web.console.conftest import Console, console_for

PIN = f"{API}/prompts/vm_enter_pin.wav"
DEFAULT_PIN = (PACKAGE_DIR / "en" / "vm_enter_pin.wav").read_bytes()


def stereo_wav(rate: int = 44100, seconds: float = 0.5) -> bytes:
    """A 16-bit stereo WAV at ``rate``: 440 Hz left, silence right."""
    left = np.round(16000 * np.sin(2 * np.pi * 440 * np.arange(round(rate * seconds)) / rate))
    frames = np.stack([left, np.zeros_like(left)], axis=1).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 2, rate, rate * 4, 4, 16)
    chunks = b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(frames))
    return b"RIFF" + struct.pack("<I", 4 + len(chunks) + len(frames)) + b"WAVE" + chunks + frames


def names_of(r: httpx.Response) -> dict[str, dict[str, object]]:
    assert r.status_code == 200, r.text
    return {item["name"]: item for item in r.json()["items"]}


async def test_list_and_download_defaults(alice: httpx.AsyncClient, tenants: Tenants) -> None:
    r = await alice.get(f"{API}/prompts")
    body = r.json()
    assert body["tenant_id"] == tenants.a.id and body["lang"] == "en" and "en" in body["languages"]
    items = names_of(r)
    pin = items["vm_enter_pin"]
    assert pin["source"] == "default" and pin["has_default"] is True
    assert pin["text"] == "Please enter your PIN, followed by the pound key."
    assert 1000 < pin["duration_ms"] < 5000  # type: ignore[operator]
    assert pin["url"] == f"/api/v1/prompts/vm_enter_pin.wav?tenant_id={tenants.a.id}&lang=en"
    assert {"num_0", "ord_31", "beep", "month_may", "cents"} <= set(items)
    wav = await alice.get(PIN)
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
    assert wav.content == DEFAULT_PIN


async def test_upload_raw_body_is_converted(
    alice: httpx.AsyncClient, ctx: WebContext, tenants: Tenants
) -> None:
    r = await alice.put(PIN, content=stereo_wav(), headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200, r.text
    assert r.json()["source"] == "custom" and r.json()["duration_ms"] == 500
    stored = override_dir(ctx.data_dir, tenants.a.id, "en") / "vm_enter_pin.wav"
    samples = read_wav(stored.read_bytes())  # 8 kHz 16-bit mono, or this raises
    assert len(samples) == 4000 and 7000 < np.abs(samples).max() < 9000  # mixed down: half
    assert [p.name for p in stored.parent.iterdir()] == ["vm_enter_pin.wav"]
    assert (await alice.get(PIN)).content == stored.read_bytes()
    assert names_of(await alice.get(f"{API}/prompts"))["vm_enter_pin"]["source"] == "custom"


async def test_upload_as_a_form_field(alice: httpx.AsyncClient) -> None:
    wav = wav_bytes(tone(500, 0.25))
    r = await alice.post(PIN, files={"file": ("pin.wav", wav, "audio/wav")})
    assert r.status_code == 200, r.text
    assert (await alice.get(PIN)).content == wav  # already the prompt format: unchanged
    r = await alice.post(PIN, files={"other": ("pin.wav", wav, "audio/wav")})
    assert r.status_code == 400 and "field 'file'" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "the file is empty; upload a WAV file, e.g. 8 kHz 16-bit mono PCM"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00 mp3 data", 415, "this looks like an MP3 file"),
        (b"just some text, not audio", 415, "not a WAV file (RIFF header missing); upload a WAV"),
        (stereo_wav()[:100], 400, "truncated WAV file"),
    ],
)
async def test_bad_uploads_are_refused_clearly(
    alice: httpx.AsyncClient, body: bytes, status: int, message: str
) -> None:
    r = await alice.put(PIN, content=body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert (await alice.get(PIN)).content == DEFAULT_PIN  # nothing stored


async def test_too_large_uploads(alice: httpx.AsyncClient) -> None:
    big = b"RIFF" + bytes(20 * 1024 * 1024)
    r = await alice.put(PIN, content=big)
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    r = await alice.post(PIN, files={"file": ("big.wav", big, "audio/wav")})
    assert r.status_code == 413 and "too large" in r.json()["detail"]

    async def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: streamed
        for _ in range(21):
            yield bytes(1024 * 1024)

    r = await alice.put(PIN, content=chunks())
    assert r.status_code == 413


async def test_names_and_languages(alice: httpx.AsyncClient, ctx: WebContext) -> None:
    wav = wav_bytes(tone(500, 0.1))
    assert (await alice.put(f"{API}/prompts/no_such.wav", content=wav)).status_code == 404
    assert (await alice.get(f"{API}/prompts/no_such.wav")).status_code == 404
    assert (await alice.get(f"{API}/prompts/Bad-Name.wav")).status_code == 422
    assert (await alice.get(f"{API}/prompts?lang=xx")).status_code == 404
    assert (await alice.get(f"{API}/prompts?lang=../../etc")).status_code == 422
    r = await alice.put(f"{API}/prompts/custom_sales_menu.wav", content=wav)
    assert r.status_code == 200 and r.json()["has_default"] is False
    item = names_of(await alice.get(f"{API}/prompts"))["custom_sales_menu"]
    assert item["source"] == "custom" and item["text"] == ""
    assert (await alice.delete(f"{API}/prompts/custom_sales_menu.wav")).status_code == 204
    assert "custom_sales_menu" not in names_of(await alice.get(f"{API}/prompts"))
    assert (await alice.get(f"{API}/prompts/custom_sales_menu.wav")).status_code == 404


async def test_delete_brings_the_default_back(alice: httpx.AsyncClient) -> None:
    assert (await alice.put(PIN, content=wav_bytes(tone(700, 0.2)))).status_code == 200
    assert (await alice.get(PIN)).content != DEFAULT_PIN
    assert (await alice.delete(PIN)).status_code == 204
    assert (await alice.get(PIN)).content == DEFAULT_PIN
    r = await alice.delete(PIN)
    assert r.status_code == 404 and "no recording" in r.json()["detail"]


async def test_tenants_are_isolated(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, root: httpx.AsyncClient, tenants: Tenants
) -> None:
    custom = wav_bytes(tone(700, 0.2))
    assert (await alice.put(PIN, content=custom)).status_code == 200
    assert names_of(await bob.get(f"{API}/prompts"))["vm_enter_pin"]["source"] == "default"
    assert (await bob.get(PIN)).content == DEFAULT_PIN
    a = f"?tenant_id={tenants.a.id}"
    assert (await bob.get(f"{API}/prompts{a}")).status_code == 404
    assert (await bob.get(PIN + a)).status_code == 404
    assert (await bob.put(PIN + a, content=custom)).status_code == 404
    assert (await bob.delete(PIN + a)).status_code == 404
    assert (await alice.get(PIN)).content == custom  # untouched
    # a system admin names the tenant (default: the default tenant)
    assert (await root.get(PIN + a)).content == custom
    assert (await root.get(PIN)).content == DEFAULT_PIN
    assert names_of(await root.get(f"{API}/prompts"))["vm_enter_pin"]["source"] == "default"
    assert (await root.get(f"{API}/prompts?tenant_id=9999")).status_code == 404
    assert (await root.put(f"{PIN}?tenant_id=9999", content=custom)).status_code == 404
    b = f"?tenant_id={tenants.b.id}"
    assert (await root.put(PIN + b, content=custom)).status_code == 200
    assert (await bob.get(PIN)).content == custom


async def test_needs_credentials(anon: httpx.AsyncClient) -> None:
    assert (await anon.get(f"{API}/prompts")).status_code == 401
    assert (await anon.get(PIN)).status_code == 401
    assert (await anon.put(PIN, content=b"x")).status_code == 401


async def test_openapi_describes_the_upload(alice: httpx.AsyncClient) -> None:
    document = (await alice.get(f"{API}/openapi.json")).json()
    upload = document["paths"]["/api/v1/prompts/{name}.wav"]["put"]
    assert set(upload["requestBody"]["content"]) == {"audio/wav", "multipart/form-data"}
    assert {"413", "415"} <= set(upload["responses"])


# --- console ---------------------------------------------------------------------------------


@pytest.fixture
async def console_a(app: FastAPI, ctx: WebContext, tenants: Tenants) -> AsyncIterator[Console]:
    """Tenant A's admin logged in to the console."""
    async for console in console_for(app, ctx, "ann", tenants.a.id):
        yield console


@pytest.fixture
async def console_sys(app: FastAPI, ctx: WebContext, tenants: Tenants) -> AsyncIterator[Console]:
    """A system admin logged in to the console."""
    async for console in console_for(app, ctx, "sys", None):
        yield console


async def test_console_page_lists_and_plays(console_a: Console, tenants: Tenants) -> None:
    r = await console_a.get("/prompts")
    assert r.status_code == 200, r.text
    assert r.headers["content-security-policy"] == CSP
    assert '<a href="/prompts"' in r.text  # in the navigation
    src = f"/api/v1/prompts/vm_enter_pin.wav?tenant_id={tenants.a.id}&amp;lang=en"
    assert f'<audio controls preload="none" src="{src}"' in r.text
    assert 'enctype="multipart/form-data"' in r.text and 'name="tenant_id"' in r.text
    assert "<script>" not in r.text and "style=" not in r.text
    forms = re.findall(r'<form method="post".*?</form>', r.text, re.S)
    assert forms and all('name="csrf_token"' in form for form in forms)
    assert 'id="tenant_id"' not in r.text  # no tenant choice for a tenant admin
    chosen = await console_a.get("/prompts?name=goodbye")
    assert '<option value="goodbye" selected>' in chosen.text


async def test_console_upload_and_revert(
    console_a: Console, ctx: WebContext, tenants: Tenants
) -> None:
    wav = wav_bytes(tone(500, 0.25))
    form = {"name": "goodbye", "lang": "en"}
    r = await console_a.post("/prompts", form, files={"file": ("bye.wav", wav, "audio/wav")})
    assert r.status_code == 303 and r.headers["location"] == "/prompts?lang=en&done=saved"
    stored = override_dir(ctx.data_dir, tenants.a.id, "en") / "goodbye.wav"
    assert stored.read_bytes() == wav
    page = await console_a.get("/prompts")
    assert "<strong>yours</strong>" in page.text and "/prompts/goodbye/revert?lang=en" in page.text
    confirm = await console_a.get("/prompts/goodbye/revert?lang=en")
    assert confirm.status_code == 200 and "the shipped recording plays again" in confirm.text
    r = await console_a.post("/prompts/goodbye/revert?lang=en", {"confirm": "yes"})
    assert r.status_code == 303 and "done=deleted" in r.headers["location"]
    assert not stored.exists()


async def test_console_refusals_show_the_message(console_a: Console) -> None:
    mp3 = b"ID3\x04\x00\x00\x00\x00\x00\x00 mp3 data"
    r = await console_a.post(
        "/prompts", {"name": "goodbye"}, files={"file": ("song.mp3", mp3, "audio/mpeg")}
    )
    assert r.status_code == 415 and "this looks like an MP3 file" in r.text
    assert '<option value="goodbye" selected>' in r.text
    r = await console_a.post("/prompts", {"name": "goodbye"})
    assert r.status_code == 400 and "choose a WAV file" in r.text
    wav = wav_bytes(tone(500, 0.1))
    r = await console_a.post(
        "/prompts", {"name": "nope"}, files={"file": ("a.wav", wav, "audio/wav")}
    )
    assert r.status_code == 400 and "choose a prompt from the list" in r.text
    r = await console_a.post(
        "/prompts", {"custom_name": "Sales Menu!"}, files={"file": ("a.wav", wav, "audio/wav")}
    )
    assert r.status_code == 400 and "a name of your own starts with custom_" in r.text
    r = await console_a.post(
        "/prompts", {"custom_name": "sales_menu"}, files={"file": ("a.wav", wav, "audio/wav")}
    )
    assert r.status_code == 303
    assert "custom_sales_menu" in (await console_a.get("/prompts")).text


async def test_console_system_admin_picks_the_tenant(
    console_sys: Console, ctx: WebContext, tenants: Tenants
) -> None:
    r = await console_sys.get(f"/prompts?tenant_id={tenants.b.id}")
    assert r.status_code == 200 and 'id="tenant_id"' in r.text
    assert f'<option value="{tenants.b.id}" selected>b.example</option>' in r.text
    wav = wav_bytes(tone(500, 0.1))
    form = {"name": "goodbye", "tenant_id": str(tenants.b.id)}
    r = await console_sys.post("/prompts", form, files={"file": ("a.wav", wav, "audio/wav")})
    assert r.status_code == 303
    assert r.headers["location"] == f"/prompts?tenant_id={tenants.b.id}&lang=en&done=saved"
    assert (override_dir(ctx.data_dir, tenants.b.id, "en") / "goodbye.wav").exists()
    assert not (override_dir(ctx.data_dir, tenants.a.id, "en") / "goodbye.wav").exists()
    assert (await console_sys.get("/prompts?tenant_id=9999")).status_code == 404
