"""A cap on the size of any request body with file uploads.

``DATA_UPLOAD_MAX_MEMORY_SIZE`` bounds the form fields only: Django streams files to temporary
disk whatever their size, and the CSRF check parses the body before any view could look at it.
This handler runs first and refuses a body longer than the largest message we would ever send
(HISP_MAX_MESSAGE_BYTES, plus room for the form fields), before a byte of it is stored.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler


def max_request_bytes() -> int:
    return int(settings.HISP_MAX_MESSAGE_BYTES) + 1024 * 1024


class BoundedUploadHandler(FileUploadHandler):
    def handle_raw_input(
        self, input_data: Any, META: Any, content_length: int, boundary: Any, encoding: Any = None
    ) -> None:
        # Django answers RequestDataTooBig (a SuspiciousOperation) with a 400 page.
        if content_length > max_request_bytes():
            raise RequestDataTooBig("the upload is larger than the largest message we send")

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        return raw_data  # pass every chunk on to the next handler

    def file_complete(self, file_size: int) -> None:
        return None
