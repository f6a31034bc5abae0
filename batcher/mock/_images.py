"""OpenAI's image generation route, ``POST /v1/images/generations``: a prompt in, PNGs out.

Each image is a small PNG made from the prompt (``make_png``), answered as ``b64_json``, or, with
``"response_format": "url"`` or a model whose name ends in ``-url``, kept by the mock and answered
as a URL it serves itself (``GET /mock-files/NAME``). https://platform.openai.com/docs/api-reference/images/create
"""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from collections.abc import Mapping

from ._media import make_png, size
from ._openai import OpenAIChat
from ._wire import Call, Refusal, Reply, Request, Response, json_object, json_response

__all__ = ["FILES", "MockFiles", "OpenAIImages"]

FILES = "/mock-files/"
"""The path under which the mock serves the images it answered as URLs, and sample images."""


class MockFiles:
    """The images answered as URLs, the most recent 1,000 of them, by name."""

    def __init__(self, keep: int = 1000) -> None:
        self._files: OrderedDict[str, bytes] = OrderedDict()
        self._keep = keep

    def put(self, name: str, data: bytes) -> None:
        self._files[name] = data
        while len(self._files) > self._keep:
            self._files.popitem(last=False)

    def get(self, name: str) -> bytes | None:
        """A stored image, or a sample ``sample-WxH.png`` made on request (for URL-ref tests)."""
        if name in self._files:
            return self._files[name]
        if name.startswith("sample-") and name.endswith(".png"):
            return make_png(name, *size(name[7:-4]))
        return None


class OpenAIImages(OpenAIChat):
    """``POST /v1/images/generations`` as OpenAI answers it (keys, errors and 429s as chat's)."""

    def __init__(self, files: MockFiles) -> None:
        self.files = files
        self._hosts: dict[int, str] = {}

    def parse(self, request: Request) -> Call:
        key = self.check_key(request)
        body = json_object(request.body, self.invalid)
        model, prompt = body.get("model"), body.get("prompt")
        if not isinstance(model, str) or not model:
            raise Refusal(self.invalid("you must provide a model parameter"))
        self.check_model(model)
        if not isinstance(prompt, str) or not prompt:
            raise Refusal(self.invalid("'prompt' is a required property"))
        n = body.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10:
            raise Refusal(self.invalid(f"{n!r} is not valid for 'n': an integer from 1 to 10"))
        # a model named *-url answers URLs unless asked otherwise, as some proxies do by default
        fmt = body.get("response_format") or ("url" if model.endswith("-url") else "b64_json")
        if fmt not in ("b64_json", "url"):
            raise Refusal(self.invalid(f"Invalid value for 'response_format': {fmt!r}"))
        host = request.headers.get("host", "127.0.0.1")
        return Call(
            model=model,
            key=key,
            prompt=prompt,
            last_user=prompt,
            images=n,
            image_size=size(body.get("size") if isinstance(body.get("size"), str) else None),
            image_base=f"http://{host}{FILES}" if fmt == "url" else None,
        )

    def answer(self, call: Call, reply: Reply, serial: int, headers: Mapping[str, str]) -> Response:
        data = []
        for k in range(call.images):
            png = make_png(f"{call.model}\n{call.prompt}\n{k}", *call.image_size)
            if call.image_base is None:
                data.append({"b64_json": base64.b64encode(png).decode("ascii")})
            else:
                name = f"img-{serial:08d}-{k + 1}.png"
                self.files.put(name, png)
                data.append({"url": call.image_base + name})
        body = {
            "created": int(time.time()),
            "data": data,
            "usage": {
                "input_tokens": reply.input_tokens,
                "output_tokens": 0,
                "total_tokens": reply.input_tokens,
            },
        }
        return json_response(200, body, {"x-request-id": f"req_mock{serial:08d}", **headers})


def serve_file(files: MockFiles, path: str) -> Response | None:
    """``GET /mock-files/NAME``: the image, or None if the path is not the mock's."""
    if not path.startswith(FILES):
        return None
    data = files.get(path[len(FILES) :])
    if data is None:
        return json_response(404, {"error": {"message": "no such file"}})
    return Response(200, data, (("content-type", "image/png"),))
