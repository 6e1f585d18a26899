"""Drop repeated <script> entries from each page.

Jupyter Book 1.x runs sphinx-thebe's and sphinx-togglebutton's asset setup twice, so every page declared
``const THEBE_JS_URL`` twice and the browser logged a SyntaxError on every page (the browser tests caught it).
"""


def _dedupe(app, pagename, templatename, context, doctree):
    files = context.get("script_files")
    if not files:
        return None
    seen, kept = set(), []
    for js in files:
        key = (getattr(js, "filename", None) or "", getattr(js, "attributes", {}).get("body", ""))  # "" vs None
        if key in seen:
            continue
        seen.add(key)
        kept.append(js)
    context["script_files"] = kept
    return None


def setup(app):
    app.connect("html-page-context", _dedupe, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

