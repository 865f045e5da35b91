// /redoc: ReDoc on the product's own /openapi.json (api/docs.py). A file, not an inline script:
// the page's Content-Security-Policy runs only script files of the product's own origin.
"use strict";

Redoc.init("/openapi.json", {}, document.getElementById("redoc"));
