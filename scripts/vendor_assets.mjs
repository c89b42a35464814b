// Copies the browser builds of our npm dependencies into static/vendor/ so the product runs offline
// (no CDN at run time). The copied files are committed too: a fresh clone works without npm.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const files = {
  "htmx.org/dist/htmx.min.js": "htmx.min.js",
  "@picocss/pico/css/pico.indigo.min.css": "pico.min.css",
  "chart.js/dist/chart.umd.min.js": "chart.umd.min.js",
};
const target = join(root, "static", "vendor");
mkdirSync(target, { recursive: true });
for (const [source, name] of Object.entries(files)) {
  // Source maps are not shipped: drop the reference so static-file manifests and browsers don't look for them.
  const text = readFileSync(join(root, "node_modules", source), "utf8").replace(/\n?\/[/*]# sourceMappingURL=\S+( \*\/)?\s*$/, "\n");
  writeFileSync(join(target, name), text);
  console.log(`static/vendor/${name} <- node_modules/${source}`);
}
