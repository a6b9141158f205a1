// @ts-check
// Starts Swagger UI on /docs (no inline script: the page CSP forbids it).

/** @type {any} */
const w = window;
if (typeof w.SwaggerUIBundle === "function") {
  w.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // No "Try it out" requests to other hosts, and no validator badge (it calls out).
    validatorUrl: null,
  });
} else {
  const note = document.getElementById("docs-loading");
  if (note) {
    note.textContent =
      "The interactive API docs could not be loaded. The description is at /openapi.json.";
  }
}
