// /docs: Swagger UI on the product's own /openapi.json, with the options FastAPI's page used
// (api/docs.py). A file, not an inline script: the page's Content-Security-Policy runs only
// script files of the product's own origin.
"use strict";

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null, // the default asks validator.swagger.io: another origin
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
