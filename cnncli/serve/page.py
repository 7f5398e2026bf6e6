"""GET /: the page where a person drops an image or a recording, or types a sentence, and sees
the top classes and the Grad-CAM view (POST /models/NAME/explain?format=json).

One self-contained file like the explainer pages (cnncli.output.html's style sheet), plus a
small script: its policy lets it talk to this server alone and load nothing from anywhere.
"""

from __future__ import annotations

import json

from cnncli.output.html import STYLE, text

POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
          "connect-src 'self'; form-action 'none'; base-uri 'none'")
TOP_CLASSES = 5

PAGE_STYLE = """
.drop { border: 2px dashed var(--line); border-radius: 8px; background: white; padding: 28px; text-align: center;
        color: var(--soft); cursor: pointer; }
.drop.over { border-color: var(--accent); color: var(--ink); }
textarea { width: 100%; min-height: 64px; font: inherit; padding: 8px; border: 1px solid var(--line); border-radius: 6px; }
button, select { font: inherit; padding: 4px 12px; margin: 6px 0; }
.bar { display: flex; align-items: center; gap: 8px; margin: 4px 0; }
.bar .name { flex: 0 0 160px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bar .fill { height: 16px; background: var(--cool); border-radius: 3px; }
.error { color: #c92a2a; }
"""

SCRIPT = """
const models = JSON.parse(document.getElementById("models").textContent);
const $ = (id) => document.getElementById(id);
const choose = $("model"), drop = $("drop"), file = $("file"), sentence = $("sentence"), status = $("status");
for (const model of models) { choose.add(new Option(`${model.name} (${model.modality})`, model.name)); }
function chosen() { return models.find((model) => model.name === choose.value); }
function layout() {
  const model = chosen();
  $("files").hidden = model.reads.files.length === 0;
  $("sentences").hidden = !model.reads.sentences;
  file.accept = model.reads.files.join(",");
}
async function explain(body, headers) {
  status.textContent = "asking the network...";
  status.className = "note";
  const url = `/models/${encodeURIComponent(choose.value)}/explain?format=json&top_k=__TOP__`;
  const answer = await fetch(url, { method: "POST", body, headers });
  const result = await answer.json();
  if (!answer.ok) { show_error(result.error); return; }
  const row = result.prediction;
  if (row.error) { show_error(row.error); return; }
  status.textContent = `${row.input}: ${row.label} (${row.score.toFixed(3)})`;
  const bars = $("top");
  bars.replaceChildren();
  for (const entry of row.top) {
    const line = document.createElement("div"), name = document.createElement("span"),
          fill = document.createElement("span"), value = document.createElement("span");
    line.className = "bar"; name.className = "name"; fill.className = "fill";
    name.textContent = entry.label; value.textContent = entry.score.toFixed(3);
    fill.style.width = `${Math.max(1, Math.round(entry.score * 300))}px`;
    line.append(name, fill, value);
    bars.append(line);
  }
  $("gradcam").src = `data:image/png;base64,${result.gradcam.png}`;
  $("gradcam").alt = `Grad-CAM for ${result.gradcam.class}`;
  $("answer").hidden = false;
}
function show_error(message) { status.textContent = message; status.className = "error"; $("answer").hidden = true; }
function send_file(chosen_file) {
  const form = new FormData();
  form.append("file", chosen_file, chosen_file.name);
  explain(form, {}).catch((error) => show_error(String(error)));
}
choose.addEventListener("change", layout);
drop.addEventListener("click", () => file.click());
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault(); drop.classList.remove("over");
  if (event.dataTransfer.files.length) { send_file(event.dataTransfer.files[0]); }
});
file.addEventListener("change", () => { if (file.files.length) { send_file(file.files[0]); } });
$("ask").addEventListener("click", () => {
  explain(JSON.stringify({ inputs: [sentence.value] }), { "Content-Type": "application/json" })
    .catch((error) => show_error(String(error)));
});
layout();
"""


def home_page(models: list[dict]) -> str:
    """The page, with what it needs of each model (name, modality, what it reads) written into it."""
    listed = json.dumps([{key: model[key] for key in ("name", "modality", "reads")} for model in models])
    listed = listed.replace("<", "\\u003c")  # JSON still, and no "</script>" can end the block early
    names = ", ".join(model["name"] for model in models)
    body = ('<section><p><label>Model <select id="model"></select></label></p>'
            '<div id="files"><div class="drop" id="drop">drop an input here, or click to choose a file</div>'
            '<input type="file" id="file" hidden></div>'
            '<div id="sentences"><textarea id="sentence" placeholder="type a sentence"></textarea>'
            '<button id="ask">Predict</button></div>'
            '<p id="status" class="note"></p>'
            '<div id="answer" class="pair" hidden><div><h2>Top classes</h2><div id="top"></div></div>'
            '<div><h2>Why: Grad-CAM</h2><img id="gradcam" alt="Grad-CAM"></div></div></section>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>cnncli serve: {text(names)}</title><style>{STYLE}{PAGE_STYLE}</style></head>"
            f"<body><header><h1>cnncli serve</h1><p>{text(names)}</p></header><main>{body}</main>"
            f'<script type="application/json" id="models">{listed}</script>'
            f"<script>{SCRIPT.replace('__TOP__', str(TOP_CLASSES))}</script></body></html>\n")
