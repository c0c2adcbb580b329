"""Request and response shapes every group of endpoints shares, in pg_anon 1.9's
terms (field names and meanings as its API has them), and how they map to
pgveil's: a connection's parameters to a URL, webhook fields to a delivery,
errors to pg_anon's ``{error_code, message}``."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg.conninfo import make_conninfo
from pydantic import BaseModel, ConfigDict, Field

from pgveil.api.webhooks import Webhook

NO_NUL = r"^[^\x00]*$"


class DbConnectionParams(BaseModel):
    # A host name, an address or a socket directory: printable ASCII (a name to be
    # looked up otherwise fails in the resolver, not as a refused connection).
    host: str = Field(min_length=1, max_length=255, pattern=r"^[!-~]+$")
    port: int = Field(ge=1, le=65535)
    # libpq reads its strings up to a NUL: one inside a value would end it there.
    db_name: str = Field(min_length=1, pattern=NO_NUL)
    user_login: str = Field(min_length=1, pattern=NO_NUL)
    user_password: str = Field(pattern=NO_NUL)

    def url(self) -> str:
        """A libpq connection string (never logged: it holds the password)."""
        return make_conninfo(
            host=self.host, port=str(self.port), dbname=self.db_name, user=self.user_login, password=self.user_password
        )


class DictionaryContent(BaseModel):
    name: str
    content: str
    additional_info: Any = None


class WebhookFields(BaseModel):
    """pg_anon's fields of an operation that reports by webhook. Unknown fields are
    ignored, as pg_anon's API ignores them."""

    model_config = ConfigDict(extra="ignore")

    operation_id: str = Field(min_length=1)
    webhook_status_url: str = Field(pattern=r"^https?://")
    webhook_metadata: Any = None
    webhook_extra_headers: dict[str, str] | None = None
    webhook_verify_ssl: bool = True

    def webhook(self) -> Webhook:
        # pg_anon lower-cases the header names and sends JSON.
        headers = {k.lower(): v for k, v in (self.webhook_extra_headers or {}).items()}
        headers.setdefault("content-type", "application/json")
        return Webhook(self.webhook_status_url, self.webhook_metadata, headers, self.webhook_verify_ssl)


class ErrorResponse(BaseModel):
    error_code: str
    message: str


class Detail(BaseModel):
    """FastAPI's body of a refusal (401, 404, 409)."""

    detail: str


# What any endpoint may answer besides its success and 422, for the OpenAPI schema.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Refused (pg_anon's error body)"},
    401: {"model": Detail, "description": "No valid bearer token"},
    500: {"model": ErrorResponse, "description": "The database failed"},
}


class ApiError(HTTPException):
    """A refusal with pg_anon's body ``{"error_code", "message"}`` (status 400 unless said)."""

    def __init__(self, error_code: str, message: str, status_code: int = 400) -> None:
        super().__init__(status_code, detail=message)
        self.error_code = error_code


def api_error_response(error: ApiError) -> JSONResponse:
    return JSONResponse({"error_code": error.error_code, "message": error.detail}, status_code=error.status_code)


def invalid(location: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 in the shape FastAPI gives (and the schema documents) every 422, for a
    check a model cannot make; without the input, which may hold a password."""
    return RequestValidationError([{"type": "value_error", "loc": location, "msg": message}])


def success(content: Any) -> dict[str, Any]:
    """pg_anon's body of a synchronous answer."""
    return {"status_id": 2, "status": "success", "content": content}
