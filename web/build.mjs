// Builds the viewer into primaa/web/static: the bundle (esbuild), the page and its CSS,
// and the licence notices of every package the bundle contains. The output is
// committed; web/check-bundle.sh checks that it equals a fresh build.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "primaa", "web", "static");
mkdirSync(out, { recursive: true });

const result = await build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  legalComments: "none",
  banner: { js: "/* primaa web viewer. Licences of the bundled packages: THIRD_PARTY_LICENSES.txt */" },
  metafile: true,
  outfile: join(out, "viewer.js"),
  logLevel: "warning",
});
copyFileSync(join(here, "src", "index.html"), join(out, "index.html"));
for (const name of ["viewer.css", "favicon.svg"]) copyFileSync(join(here, "src", name), join(out, name));

// One notice per bundled package, from its own package.json and licence file.
const packages = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (match) packages.add(match[1]);
}
const notices = [
  "Third-party software in viewer.js (bundled from npm by web/build.mjs).",
  "",
];
for (const name of [...packages].sort()) {
  const root = join(here, "node_modules", name);
  const meta = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const licenceFile = readdirSync(root).find((f) => /^(licen[cs]e|copying)/i.test(f));
  notices.push("=".repeat(78), `${meta.name} ${meta.version} (${meta.license})`, "=".repeat(78));
  notices.push(licenceFile ? readFileSync(join(root, licenceFile), "utf8").trim() : "(no licence file)", "");
}
writeFileSync(join(out, "THIRD_PARTY_LICENSES.txt"), notices.join("\n") + "\n");
