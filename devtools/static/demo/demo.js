// The upload demo page. It talks only to its own backend (relative URLs under the
// page's base path) and, for the bytes themselves, to S3 through the presigned URL the
// backend hands out. It never sees the gateway's API key.
(() => {
  "use strict";

  const MAX_PARALLEL = 3;
  // Headers a browser sets itself and refuses to take from a script.
  const FORBIDDEN_HEADERS = new Set(["content-length", "host", "connection"]);
  const QUOTA_CODES = new Set(["quota_exceeded", "project_quota_exceeded"]);

  const $ = (selector) => document.querySelector(selector);
  const apiUrl = (path) => new URL(`api/${path}`, document.baseURI).toString();
  const formatBytes = (n) => customElements.get("storage-usage-bar").formatBytes(n);

  /** fetch() against the backend: {ok, status, body} with the JSON body (or null). */
  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(apiUrl(path), init);
    } catch (err) {
      return { ok: false, status: 0, body: { detail: "The server could not be reached." } };
    }
    let json = null;
    try {
      json = await response.json();
    } catch (err) {
      json = null;
    }
    return { ok: response.ok, status: response.status, body: json };
  }

  // --- usage --------------------------------------------------------------------------

  async function refreshUsage() {
    const { ok, body } = await api("GET", "usage/");
    if (!ok || !body) return;
    const bar = $("#usage-bar");
    bar.setAttribute("used", String(body.storage_used_bytes));
    if (body.storage_limit_bytes === null) bar.removeAttribute("limit");
    else bar.setAttribute("limit", String(body.storage_limit_bytes));
    $("#tenant-id").textContent = body.tenant_id;
    const parts = [`${body.total_files} file${body.total_files === 1 ? "" : "s"}`];
    if (body.storage_reserved_bytes > 0) {
      parts.push(`${formatBytes(body.storage_reserved_bytes)} reserved by uploads in progress`);
    }
    if (body.plan) parts.push(`plan: ${body.plan}`);
    $("#usage-details").textContent = parts.join(" · ");
  }

  // --- stored files -------------------------------------------------------------------

  async function refreshFiles() {
    const { ok, body } = await api("GET", "files/");
    if (!ok || !body) return;
    const tbody = $("#file-list");
    tbody.replaceChildren(
      ...body.data.map((file) => {
        const row = document.createElement("tr");
        row.dataset.uploadId = file.upload_id;
        const cell = (text) => {
          const td = document.createElement("td");
          td.textContent = text;
          return td;
        };
        const actions = document.createElement("td");
        actions.className = "actions";
        const download = document.createElement("a");
        download.className = "download";
        download.href = apiUrl(`files/${encodeURIComponent(file.upload_id)}/download/`);
        download.textContent = "Download";
        download.setAttribute("download", file.filename);
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "delete";
        remove.textContent = "Delete";
        remove.addEventListener("click", () => deleteFile(file, remove));
        actions.append(download, remove);
        row.append(
          cell(file.filename),
          cell(formatBytes(file.size_bytes)),
          cell(new Date(file.uploaded_at).toLocaleString()),
          actions,
        );
        return row;
      }),
    );
    $("#no-files").hidden = body.data.length > 0;
  }

  async function deleteFile(file, button) {
    button.disabled = true;
    const { ok, body } = await api("DELETE", `files/${encodeURIComponent(file.upload_id)}/`);
    if (!ok) {
      showAlert("Could not delete the file", body?.detail ?? "Please try again.");
      button.disabled = false;
    } else {
      hideAlert();
    }
    await Promise.all([refreshUsage(), refreshFiles()]);
  }

  // --- alerts -------------------------------------------------------------------------

  function showAlert(title, text) {
    const box = $("#quota-alert");
    const strong = document.createElement("strong");
    strong.textContent = title;
    const p = document.createElement("span");
    p.textContent = text;
    box.replaceChildren(strong, p);
    box.hidden = false;
  }

  function hideAlert() {
    $("#quota-alert").hidden = true;
  }

  function quotaMessage(file, body) {
    const scope = body.code === "project_quota_exceeded" ? "Your organisation's" : "Your";
    const used = formatBytes(body.storage_used_bytes);
    const limit = formatBytes(body.storage_limit_bytes);
    const reserved = body.storage_reserved_bytes
      ? ` (plus ${formatBytes(body.storage_reserved_bytes)} reserved by uploads in progress)`
      : "";
    return (
      `“${file.name}” needs ${formatBytes(body.requested_bytes)}. ` +
      `${scope} storage has ${used} of ${limit} used${reserved}.`
    );
  }

  // --- one file's upload --------------------------------------------------------------

  function addRow(file) {
    const row = $("#upload-row").content.firstElementChild.cloneNode(true);
    row.querySelector(".name").textContent = file.name;
    row.querySelector(".size").textContent = formatBytes(file.size);
    $("#upload-list").prepend(row);
    return {
      el: row,
      set(state, text, percent) {
        row.dataset.state = state;
        if (text !== undefined) row.querySelector(".status").textContent = text;
        if (percent !== undefined) row.querySelector("progress").value = percent;
      },
    };
  }

  /** Send the bytes to S3 with progress; resolves {ok, status, error}. */
  function sendToStorage(ticket, file, onProgress) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open(ticket.method, ticket.url);
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) onProgress((event.loaded / event.total) * 100);
      };
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          resolve({ ok: true, status: xhr.status });
          return;
        }
        resolve({ ok: false, status: xhr.status, error: s3Error(xhr) });
      };
      xhr.onerror = () =>
        resolve({
          ok: false,
          status: 0,
          error:
            "storage could not be reached or refused this page's origin (network or CORS error)",
        });
      xhr.ontimeout = () => resolve({ ok: false, status: 0, error: "the upload timed out" });

      if (ticket.method === "POST" && ticket.fields) {
        const form = new FormData();
        for (const [name, value] of Object.entries(ticket.fields)) form.append(name, value);
        form.append("file", file); // S3 wants the file last
        xhr.send(form);
        return;
      }
      for (const [name, value] of Object.entries(ticket.headers || {})) {
        if (!FORBIDDEN_HEADERS.has(name.toLowerCase())) xhr.setRequestHeader(name, value);
      }
      xhr.send(file);
    });
  }

  function s3Error(xhr) {
    try {
      const doc = new DOMParser().parseFromString(xhr.responseText, "application/xml");
      const code = doc.querySelector("Error > Code")?.textContent;
      const message = doc.querySelector("Error > Message")?.textContent;
      if (code) return `storage refused the upload: ${code}${message ? ` — ${message}` : ""}`;
    } catch (err) {
      // not XML
    }
    return `storage answered HTTP ${xhr.status}`;
  }

  async function uploadOne(file) {
    const row = addRow(file);
    const contentType = file.type || "application/octet-stream";
    row.set("requesting", "Asking for an upload URL…");
    const ticket = await api("POST", "uploads/", {
      filename: file.name,
      content_type: contentType,
      size_bytes: file.size,
    });
    if (!ticket.ok) {
      const body = ticket.body || {};
      if (ticket.status === 413 && QUOTA_CODES.has(body.code)) {
        row.set("rejected", "Not uploaded: storage full");
        showAlert(
          "Storage full — delete files or upgrade your plan",
          quotaMessage(file, body),
        );
      } else if (ticket.status === 413 && body.code === "file_too_large") {
        const max = body.max_file_size_bytes;
        row.set("rejected", `Not uploaded: larger than the ${formatBytes(max)} per-file maximum`);
      } else {
        row.set("error", `Not uploaded: ${body.detail || `server answered ${ticket.status}`}`);
      }
      return false;
    }

    const { upload_id: uploadId } = ticket.body;
    row.el.dataset.uploadId = uploadId;
    row.set("uploading", "Uploading… 0%", 0);
    const sent = await sendToStorage(ticket.body, file, (pct) =>
      row.set("uploading", `Uploading… ${Math.floor(pct)}%`, pct),
    );
    if (!sent.ok) {
      // Free the space reserved for it now rather than when the URL expires.
      await api("DELETE", `uploads/${encodeURIComponent(uploadId)}/`);
      row.set("error", `Upload failed: ${sent.error}`);
      return false;
    }

    row.set("completing", "Finishing…", 100);
    const done = await api("POST", `uploads/${encodeURIComponent(uploadId)}/complete/`);
    if (!done.ok || done.body.status !== "completed") {
      const why = done.body?.detail || `status ${done.body?.status ?? done.status}`;
      row.set("error", `Upload not accepted: ${why}`);
      return false;
    }
    row.set("done", "Uploaded", 100);
    return true;
  }

  async function uploadAll(fileList) {
    const queue = Array.from(fileList);
    if (queue.length === 0) return;
    hideAlert();
    const workers = Array.from({ length: Math.min(MAX_PARALLEL, queue.length) }, async () => {
      while (queue.length > 0) {
        const file = queue.shift();
        try {
          await uploadOne(file);
        } finally {
          await refreshUsage();
        }
      }
    });
    await Promise.all(workers);
    await Promise.all([refreshUsage(), refreshFiles()]);
    document.body.dataset.uploads = "idle";
  }

  // --- wiring -------------------------------------------------------------------------

  function start() {
    const input = $("#file-input");
    const zone = $("#drop-zone");
    const run = (files) => {
      document.body.dataset.uploads = "busy";
      uploadAll(files).catch((err) => {
        showAlert("Something went wrong", String(err));
        document.body.dataset.uploads = "idle";
      });
    };
    input.addEventListener("change", () => {
      const files = Array.from(input.files);
      input.value = ""; // picking the same file again fires "change" again
      run(files);
    });
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      run(event.dataTransfer.files);
    });
    Promise.all([refreshUsage(), refreshFiles()]).finally(() => {
      document.body.dataset.ready = "true";
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
