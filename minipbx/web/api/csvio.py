"""CSV in and out of the API: reading an uploaded body, answering with a download."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from minipbx.web.errors import FieldError

MAX_UPLOAD = 20 * 1024 * 1024
CSV_TYPE = "text/csv; charset=utf-8"
#: ``openapi_extra`` of an endpoint whose request body is a CSV file.
CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}
#: ``responses`` entry of an endpoint answering with a CSV file.
CSV_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV file"}
}


async def read_csv_body(request: Request) -> str:
    """The request body as text (UTF-8, a BOM allowed); 422 if too large or not UTF-8."""
    body = await request.body()
    if len(body) > MAX_UPLOAD:
        raise FieldError(("body",), f"larger than {MAX_UPLOAD // (1024 * 1024)} MiB")
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FieldError(("body",), "not UTF-8 text") from None


def download(
    chunks: AsyncIterator[str], filename: str, media_type: str = CSV_TYPE
) -> StreamingResponse:
    """A streamed file download named ``filename``."""
    return StreamingResponse(
        (chunk async for chunk in chunks),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """``rows`` under ``header`` as CSV text (``None`` as an empty cell)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])
    return out.getvalue()


async def once(text: str) -> AsyncIterator[str]:
    """``text`` as a one-chunk stream (for :func:`download`)."""
    yield text
