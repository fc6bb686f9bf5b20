"""circuitsvis attention views that render with no network.

circuitsvis's own HTML loads its JavaScript from a CDN whenever the kernel can reach the
internet, so a notebook saved online shows blank boxes offline. Its wheel also ships the
whole bundle (`circuitsvis/dist/cdn/iife.js`, about 1.3 MB). `attention_heads` inlines
that bundle in the first view a kernel displays and reuses the global it defines in every
later view, so an executed notebook carries the library exactly once and no URL.
"""

from __future__ import annotations

import json
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import torch

_state = {"library_emitted": False}


@lru_cache(maxsize=1)
def bundled_javascript() -> str:
    """circuitsvis's bundled JavaScript, safe to place inside a <script> element."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    source = path.read_text(encoding="utf-8")
    # A literal "</script" would end the element early; the source-map comment would make
    # browser dev tools fetch a file that is not there.
    source = source.replace("</script", "<\\/script")
    return "\n".join(line for line in source.splitlines() if not line.startswith("//# sourceMappingURL"))


class AttentionView:
    """An attention-pattern view; Jupyter shows it through `_repr_html_`."""

    def __init__(self, props: dict, with_library: bool) -> None:
        self.props = props
        self.with_library = with_library
        self.element_id = f"circuitlab-attention-{uuid.uuid4().hex[:12]}"

    def _repr_html_(self) -> str:
        library = f"<script>{bundled_javascript()}</script>\n" if self.with_library else ""
        # Wait for the global `CircuitsVis` (defined by the first view's bundle) before drawing.
        draw = (
            "(function draw(tries) {\n"
            f"  if (window.CircuitsVis) {{ CircuitsVis.render({json.dumps(self.element_id)}, "
            f"CircuitsVis.AttentionHeads, {_json_for_script(self.props)}); return; }}\n"
            "  if (tries > 0) setTimeout(function () { draw(tries - 1); }, 100);\n"
            "})(100);"
        )
        return f'{library}<div id="{self.element_id}" style="margin: 15px 0;"></div>\n<script>\n{draw}\n</script>'


def attention_heads(
    attention: torch.Tensor,
    tokens: Sequence[str],
    head_names: Optional[Sequence[str]] = None,
    *,
    include_library: Optional[bool] = None,
) -> AttentionView:
    """circuitsvis's AttentionHeads view of `attention` ([head, dst, src]) over `tokens`.

    The first view made in a kernel carries the JavaScript bundle; pass
    `include_library=True` to force it (e.g. for a view saved on its own).
    """
    attention = attention.detach().float().cpu()
    if attention.dim() != 3 or attention.shape[1] != attention.shape[2] or attention.shape[1] != len(tokens):
        raise ValueError(
            f"attention must be [head, dst, src] with dst = src = len(tokens) = {len(tokens)}, "
            f"got shape {tuple(attention.shape)}"
        )
    if include_library is None:
        include_library = not _state["library_emitted"]
    _state["library_emitted"] = _state["library_emitted"] or include_library
    props = {"attention": attention.tolist(), "tokens": list(tokens), "maskUpperTri": True}
    if head_names is not None:
        props["attentionHeadNames"] = list(head_names)
    return AttentionView(props, with_library=include_library)


def _json_for_script(value) -> str:
    """JSON that cannot close the surrounding <script> element (a token may contain "</")."""
    return json.dumps(value).replace("</", "<\\/")
