/**
 * <storage-usage-bar used="380000000" limit="500000000"></storage-usage-bar>
 *
 * A dependency-free web component that shows a tenant's storage usage, after the
 * Tenantbox "Building a usage bar" guide, with decimal units (1 kB = 1000 B).
 *
 *   used   bytes used (storage_used_bytes); missing or invalid = 0
 *   limit  bytes allowed (storage_limit_bytes); missing or "" = unlimited
 *
 * Bands: green below 70 %, yellow from 70 % ("Running low on storage."), red from
 * 90 % ("Storage almost full. Delete files or upgrade your plan."). The percentage is
 * rounded and capped at 100; usage over the limit is said in words as well.
 *
 * For styling and tests the host and the bar's fill carry data-band="green|yellow|red"
 * ("none" when unlimited), and the host carries data-percent and data-over-limit.
 * Shadow parts: summary, used, quota, track, fill, message. Colours can be themed with
 * --usage-bar-green, --usage-bar-yellow, --usage-bar-red and --usage-bar-track.
 */
(() => {
  "use strict";

  const UNITS = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
  const WARN_AT = 70;
  const CRITICAL_AT = 90;

  /** Decimal units with at most one decimal: 1200000000 -> "1.2 GB". */
  function formatBytes(bytes) {
    if (!Number.isFinite(bytes) || bytes <= 0) return "0 B";
    let exp = Math.min(Math.floor(Math.log10(bytes) / 3), UNITS.length - 1);
    let value = Number((bytes / 1000 ** exp).toFixed(1));
    if (value >= 1000 && exp < UNITS.length - 1) {
      exp += 1; // 999 950 B rounds to "1000 kB": say "1 MB" instead
      value = Number((bytes / 1000 ** exp).toFixed(1));
    }
    if (exp === 0) value = Math.round(bytes);
    return `${value} ${UNITS[exp]}`;
  }

  function parseBytes(raw) {
    if (raw === null || raw.trim() === "") return null;
    const n = Number(raw);
    return Number.isFinite(n) && n >= 0 ? n : null;
  }

  function usageState(used, limit) {
    if (limit === null) {
      return { unlimited: true, percent: null, band: "none", overLimit: false };
    }
    const percent = limit > 0 ? Math.min(Math.round((used / limit) * 100), 100) : 100;
    const band = percent >= CRITICAL_AT ? "red" : percent >= WARN_AT ? "yellow" : "green";
    return { unlimited: false, percent, band, overLimit: used > limit };
  }

  const template = document.createElement("template");
  template.innerHTML = `
    <style>
      :host {
        display: block;
        font: inherit;
        font-size: 0.875rem;
        color: inherit;
        --_green: var(--usage-bar-green, #16a34a);
        --_yellow: var(--usage-bar-yellow, #eab308);
        --_red: var(--usage-bar-red, #dc2626);
      }
      :host([hidden]) { display: none; }
      .summary { display: flex; justify-content: space-between; gap: 1rem; margin-bottom: 0.375rem; }
      .track {
        height: 0.5rem;
        border-radius: 9999px;
        overflow: hidden;
        background: var(--usage-bar-track, #e5e7eb);
      }
      .fill {
        height: 100%;
        width: 0;
        border-radius: inherit;
        background: var(--_green);
        transition: width 0.5s ease, background-color 0.5s ease;
      }
      .fill[data-band="yellow"] { background: var(--_yellow); }
      .fill[data-band="red"] { background: var(--_red); }
      .message { margin: 0.375rem 0 0; }
      .message:empty { display: none; }
      :host([data-band="yellow"]) .message { color: #a16207; }
      :host([data-band="red"]) .message { color: var(--_red); }
      :host([data-band="none"]) .message { color: #6b7280; }
      .track[hidden] { display: none; }
    </style>
    <div class="summary" part="summary">
      <span class="used" part="used"></span>
      <span class="quota" part="quota"></span>
    </div>
    <div class="track" part="track" role="progressbar" aria-valuemin="0" aria-valuemax="100">
      <div class="fill" part="fill bar"></div>
    </div>
    <p class="message" part="message" aria-live="polite"></p>
  `;

  class StorageUsageBar extends HTMLElement {
    static get observedAttributes() {
      return ["used", "limit"];
    }

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      root.appendChild(template.content.cloneNode(true));
      this._used = root.querySelector(".used");
      this._quota = root.querySelector(".quota");
      this._track = root.querySelector(".track");
      this._fill = root.querySelector(".fill");
      this._message = root.querySelector(".message");
    }

    connectedCallback() {
      // A property set before the element was upgraded shadows the accessor; re-apply it.
      for (const name of StorageUsageBar.observedAttributes) {
        if (Object.prototype.hasOwnProperty.call(this, name)) {
          const value = this[name];
          delete this[name];
          this[name] = value;
        }
      }
      this.render();
    }

    attributeChangedCallback() {
      this.render();
    }

    get used() {
      return parseBytes(this.getAttribute("used")) ?? 0;
    }

    set used(value) {
      this.setAttribute("used", String(value ?? 0));
    }

    /** Bytes allowed, or null when unlimited. */
    get limit() {
      return parseBytes(this.getAttribute("limit"));
    }

    set limit(value) {
      if (value === null || value === undefined || value === "") this.removeAttribute("limit");
      else this.setAttribute("limit", String(value));
    }

    get band() {
      return usageState(this.used, this.limit).band;
    }

    get percent() {
      return usageState(this.used, this.limit).percent;
    }

    render() {
      const used = this.used;
      const limit = this.limit;
      const state = usageState(used, limit);

      this._used.textContent = `${formatBytes(used)} used`;
      this.dataset.band = state.band;
      this._fill.dataset.band = state.band;
      if (state.unlimited) {
        this._quota.textContent = "Unlimited";
        this._track.hidden = true;
        this._fill.style.width = "0%";
        this._track.removeAttribute("aria-valuenow");
        this._message.textContent = "No storage limit set";
        delete this.dataset.percent;
        this.dataset.overLimit = "false";
        return;
      }

      this._quota.textContent = `${state.percent}% of ${formatBytes(limit)}`;
      this._track.hidden = false;
      this._fill.style.width = `${state.percent}%`;
      this._track.setAttribute("aria-valuenow", String(state.percent));
      this._track.setAttribute(
        "aria-valuetext",
        `${formatBytes(used)} of ${formatBytes(limit)} used`,
      );
      this.dataset.percent = String(state.percent);
      this.dataset.overLimit = String(state.overLimit);

      let message = "";
      if (state.overLimit) {
        message =
          `Over the limit by ${formatBytes(used - limit)}. ` +
          "Delete files or upgrade your plan.";
      } else if (state.band === "red") {
        message = "Storage almost full. Delete files or upgrade your plan.";
      } else if (state.band === "yellow") {
        message = "Running low on storage.";
      }
      this._message.textContent = message;
    }
  }

  StorageUsageBar.formatBytes = formatBytes;
  if (!customElements.get("storage-usage-bar")) {
    customElements.define("storage-usage-bar", StorageUsageBar);
  }
})();
