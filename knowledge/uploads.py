"""Streaming size limit for uploaded files.

Installed first in the request's upload handlers (before anything reads the body), it counts each
file's bytes as they arrive and skips the file the moment it passes the limit: the rest of that file
is read and discarded without ever being written to memory or disk, and the other files of the same
request are still received.
"""

from __future__ import annotations

from django.core.files.uploadhandler import FileUploadHandler, SkipFile


class LimitedUploadHandler(FileUploadHandler):
    def __init__(self, request=None, *, max_bytes: int):
        super().__init__(request)
        self.max_bytes = max_bytes
        self.received = 0
        self.rejected: list[str] = []  # names of files skipped for size

    def new_file(self, field_name, file_name, content_type, content_length, charset=None, content_type_extra=None):
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.max_bytes:
            self.rejected.append(self.file_name)
            raise SkipFile(f"{self.file_name} is over {self.max_bytes} bytes")
        return raw_data  # pass through to the memory/temporary-file handlers

    def file_complete(self, file_size: int):
        return None  # the next handler builds the UploadedFile
