// The example's file page. It talks to its own backend (api/…, relative to the page)
// and, for the bytes, straight to S3 with the presigned URL the backend hands out.
// It never sees the gateway's API key.
(() => {
  "use strict";
  const $ = (s) => document.querySelector(s);
  const api = (path) => new URL(`api/${path}`, document.baseURI).toString();
  // headers a browser sets itself and refuses to take from a script
  const FORBIDDEN = new Set(["content-length", "host", "connection"]);
  const bytes = (n) => {
    const bar = customElements.get("storage-usage-bar");
    return bar ? bar.formatBytes(n) : `${n} B`;
  };

  async function call(method, path, body) {
    const init = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      const r = await fetch(api(path), init);
      return { ok: r.ok, status: r.status, body: await r.json().catch(() => null) };
    } catch {
      return { ok: false, status: 0, body: { detail: "The server could not be reached." } };
    }
  }

  function alertBox(title, text) {
    const box = $("#quota-alert");
    const strong = document.createElement("strong");
    strong.textContent = title;
    box.replaceChildren(strong, document.createTextNode(text));
    box.hidden = !title;
  }

  async function refreshUsage() {
    const { ok, body } = await call("GET", "usage/");
    if (!ok) return;
    const bar = $("#usage-bar");
    bar.setAttribute("used", String(body.storage_used_bytes));
    if (body.storage_limit_bytes === null) bar.removeAttribute("limit");
    else bar.setAttribute("limit", String(body.storage_limit_bytes));
    $("#tenant-id").textContent = body.tenant_id;
    const reserved = body.storage_reserved_bytes
      ? ` · ${bytes(body.storage_reserved_bytes)} reserved by uploads in progress` : "";
    $("#usage-details").textContent = `${body.total_files} file(s)${reserved}`;
  }

  async function refreshFiles() {
    const { ok, body } = await call("GET", "files/");
    if (!ok) return;
    $("#file-list").replaceChildren(...body.data.map((file) => {
      const row = document.createElement("tr");
      const name = document.createElement("td");
      name.textContent = file.filename;
      const size = document.createElement("td");
      size.textContent = bytes(file.size_bytes);
      const actions = document.createElement("td");
      actions.className = "actions";
      const link = document.createElement("a");
      link.href = api(`files/${encodeURIComponent(file.upload_id)}/download/`);
      link.textContent = "Download";
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Delete";
      remove.addEventListener("click", async () => {
        remove.disabled = true;
        const r = await call("DELETE", `files/${encodeURIComponent(file.upload_id)}/`);
        if (!r.ok) alertBox("Could not delete the file. ", r.body?.detail ?? "");
        await Promise.all([refreshUsage(), refreshFiles()]);
      });
      actions.append(link, " ", remove);
      row.append(name, size, actions);
      return row;
    }));
    $("#no-files").hidden = body.data.length > 0;
  }

  function send(ticket, file, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(ticket.method, ticket.url);
      let body = file;
      if (ticket.method === "POST") {
        body = new FormData();
        for (const [k, v] of Object.entries(ticket.fields || {})) body.append(k, v);
        body.append("file", file);
      } else {
        for (const [k, v] of Object.entries(ticket.headers)) {
          if (!FORBIDDEN.has(k.toLowerCase())) xhr.setRequestHeader(k, v);
        }
      }
      xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
      xhr.onload = () => (xhr.status < 300 ? resolve() : reject(new Error(`S3 answered ${xhr.status}`)));
      xhr.onerror = () => reject(new Error("the upload could not reach storage (CORS?)"));
      xhr.send(body);
    });
  }

  async function upload(file) {
    const li = document.createElement("li");
    li.dataset.state = "asking";
    const label = document.createElement("div");
    label.textContent = `${file.name} (${bytes(file.size)})`;
    const progress = document.createElement("progress");
    progress.max = 1;
    progress.value = 0;
    const status = document.createElement("div");
    status.className = "status muted";
    status.textContent = "Asking for an upload URL…";
    li.append(label, progress, status);
    $("#upload-list").append(li);
    const fail = (text) => {
      li.dataset.state = "failed";
      status.textContent = text;
    };
    const asked = await call("POST", "uploads/", {
      filename: file.name,
      content_type: file.type || "application/octet-stream",
      size_bytes: file.size,
    });
    if (asked.status === 413 && asked.body?.storage_limit_bytes !== undefined) {
      const b = asked.body;
      alertBox("Storage full — delete files or upgrade your plan. ",
        `${bytes(b.storage_used_bytes)} of ${bytes(b.storage_limit_bytes)} used;` +
        ` ${file.name} needs ${bytes(b.requested_bytes)}.`);
      refreshUsage(); // the limit may have changed since the page loaded
      return fail("Not uploaded: storage full.");
    }
    if (!asked.ok) return fail(asked.body?.detail ?? `Refused (${asked.status}).`);
    const ticket = asked.body;
    li.dataset.state = "uploading";
    status.textContent = "Uploading…";
    try {
      await send(ticket, file, (f) => { progress.value = f; });
    } catch (err) {
      await call("DELETE", `uploads/${encodeURIComponent(ticket.upload_id)}/`);
      return fail(`Upload failed: ${err.message}.`);
    }
    const done = await call("POST", `uploads/${encodeURIComponent(ticket.upload_id)}/complete/`);
    if (!done.ok) return fail(done.body?.detail ?? "Could not complete the upload.");
    progress.value = 1;
    li.dataset.state = "done";
    status.textContent = "Stored.";
    await Promise.all([refreshUsage(), refreshFiles()]);
  }

  function start(files) {
    alertBox("", "");
    for (const file of files) upload(file);
  }

  const input = $("#file-input");
  input.addEventListener("change", () => { start([...input.files]); input.value = ""; });
  const zone = $("#drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    start([...e.dataTransfer.files]);
  });
  Promise.all([refreshUsage(), refreshFiles()]).then(() => { document.body.dataset.ready = "true"; });
})();
