// Neuron Atlas explorer: one page, hash routes, no build step and no third-party code.
// Two data sources with one interface: "api" (the gateway's /ui/api, API key in sessionStorage)
// and "static" (the report folder: data/*.js scripts, which load from disk where fetch cannot).
"use strict";
(function () {
  const MODE = document.querySelector('meta[name="atlas-mode"]').content;
  const KEY_ITEM = "neuron-atlas-api-key";
  const main = document.getElementById("main");
  const crumbs = document.getElementById("crumbs");
  const changeKey = document.getElementById("change-key");
  const timings = (window.atlasTimings = []);
  let generation = 0; // bumps on every route change: late answers of an old page are dropped
  let blobUrls = [];
  let pollTimer = null;

  // --- DOM helpers: text always goes in as text, never as HTML ---
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      // through the CSSOM: a style attribute would be refused by the page's CSP (style-src 'self')
      else if (k === "style") el.style.cssText = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const fmt = (x, d = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
  const pct = (x) => (x === null || x === undefined ? "–" : Math.round(x * 100) + "%");
  const pval = (p) => (p === null || p === undefined ? "–" : p < 0.001 ? p.toExponential(1) : p.toFixed(3));
  const count = (n) => Number(n).toLocaleString("en");
  const enc = encodeURIComponent;
  const route = {
    jobs: () => "#/",
    tree: (job) => `#/job/${enc(job)}`,
    concept: (job, id, page) => `#/job/${enc(job)}/concept/${enc(id)}` + (page ? `/page/${page + 1}` : ""),
    neuron: (job, layer, ch) => `#/job/${enc(job)}/neuron/${enc(layer)}/${ch}`,
    compare: (job, a, b) => `#/job/${enc(job)}/compare/${enc(a)}/${enc(b)}`,
  };

  // --- data sources ---
  class HttpError extends Error {
    constructor(status, detail) { super(detail || `HTTP ${status}`); this.status = status; }
  }
  const api = {
    key: () => sessionStorage.getItem(KEY_ITEM),
    headers() { const k = api.key(); return k ? { Authorization: "Bearer " + k } : {}; },
    async get(path) {
      const r = await fetch(path, { headers: api.headers() });
      if (!r.ok) {
        let detail = "";
        try { const body = await r.json(); detail = body.detail || body.title || ""; } catch (e) { /* not JSON */ }
        throw new HttpError(r.status, detail);
      }
      return r.json();
    },
    job: (job) => `api/jobs/${enc(job)}`,
    jobs: () => api.get("../v1/jobs?page_size=50"),
    summary: (job) => api.get(`${api.job(job)}/summary`),
    children: (job, parent, offset) =>
      api.get(`${api.job(job)}/children?offset=${offset}` + (parent ? `&parent=${enc(parent)}` : "")),
    search: (job, q) => api.get(`${api.job(job)}/search?q=${enc(q)}`),
    concept: (job, id) => api.get(`${api.job(job)}/concepts/${enc(id)}`),
    images: (job, id, page) => api.get(`${api.job(job)}/concepts/${enc(id)}/images?page=${page}`),
    neuron: (job, layer, ch) => api.get(`${api.job(job)}/neurons/${enc(layer)}/${ch}`),
    // thumbnails come through the authenticated route, so the key goes along; shown as blob URLs
    async thumb(job, id) {
      const r = await fetch(`${api.job(job)}/thumbs/${id}`, { headers: api.headers() });
      if (!r.ok) throw new HttpError(r.status);
      const url = URL.createObjectURL(await r.blob());
      blobUrls.push(url);
      return url;
    },
  };

  const pending = {};
  const loaded = {};
  window.atlasData = function (key, value) {
    loaded[key] = value;
    if (pending[key]) { pending[key].resolve(value); delete pending[key]; }
  };
  function load(key, file) {
    if (key in loaded) return Promise.resolve(loaded[key]);
    if (pending[key]) return pending[key].promise;
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    pending[key] = { promise, resolve };
    const script = h("script", { src: "data/" + file });
    script.addEventListener("error", () => { delete pending[key]; reject(new HttpError(404, `missing data/${file}`)); });
    document.head.append(script);
    return promise;
  }
  const PAGE = 100;
  const local = {
    jobs: async () => {
      const s = await local.summary();
      return { jobs: [{ id: "report", title: s.title, status: "succeeded", stage: "done", images: s.images, progress: {} }] };
    },
    summary: () => load("summary", "summary.js"),
    async children(job, parent, offset) {
      const all = await load(`children/${parent || "_top"}`, `children/${parent || "_top"}.js`);
      return { parent, offset, total: all.total, items: all.items.slice(offset, offset + PAGE) };
    },
    async search(job, q) {
      const labels = await load("labels", "labels.js");
      const byId = new Map(labels.map((row) => [row[0], row]));
      const words = q.toLowerCase().split(/\s+/).filter(Boolean);
      const found = words.length ? labels.filter((row) => words.every((w) => row[1].toLowerCase().includes(w))) : [];
      const path = (row) => {
        const out = [];
        for (let p = row[4]; p && byId.has(p); p = byId.get(p)[4]) out.unshift({ id: p, label: byId.get(p)[1] });
        return out;
      };
      return {
        query: q, total: found.length,
        items: found.slice(0, 50).map((r) => ({ id: r[0], label: r[1], level: r[2], size: r[3], path: path(r) })),
      };
    },
    concept: (job, id) => load(`concept/${id}`, `concept/${id}.js`),
    async images(job, id, page) {
      if (page === 0) return (await local.concept(job, id)).images_page;
      return load(`images/${id}/${page}`, `images/${id}-${page}.js`);
    },
    neuron: (job, layer, ch) => load(`neuron/${layer}/${ch}`, `neuron/${layer}-${ch}.js`),
    thumb: async (job, id) => `../thumbs/${id}.webp`,
  };
  const data = MODE === "static" ? local : api;

  // --- page frame ---
  function setCrumbs(items) {
    crumbs.replaceChildren(...items.map(([text, href]) => h("li", {}, href ? h("a", { href }, text) : h("span", { "aria-current": "page" }, text))));
  }
  function show(title, ...content) {
    document.title = `${title} · Neuron Atlas`;
    main.replaceChildren(...content.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false && c !== ""));
  }
  function rendered(name) {
    // time from navigation (or from the route change) to this page's first complete render
    const ms = performance.now() - routeStart;
    timings.push({ page: name, ms: Math.round(ms), route: location.hash });
    document.body.dataset.rendered = name;
    performance.mark("atlas-rendered-" + name);
  }
  function fail(err) {
    if (err instanceof HttpError && err.status === 401) return keyForm("That API key was not accepted.");
    show("Error", h("h1", { tabindex: "-1" }, "Something went wrong"), h("p", { class: "error", role: "alert" },
      err instanceof HttpError && err.status === 404 ? `Not found: ${err.message}` : String(err.message || err)));
    document.body.dataset.rendered = "error";
  }
  function focusHeading() {
    const h1 = main.querySelector("h1");
    if (h1) { h1.setAttribute("tabindex", "-1"); h1.focus({ preventScroll: false }); }
  }

  // --- API key (api mode): entered once, kept for this browser session ---
  function keyForm(message) {
    setCrumbs([]);
    const input = h("input", { id: "api-key", type: "password", autocomplete: "off", required: false });
    const form = h("form", { class: "keyform", onsubmit: (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY_ITEM, input.value.trim());
      if (location.hash === "#/") dispatch(); else location.hash = "#/"; // hashchange dispatches
    } },
      h("label", { for: "api-key" }, "API key"), input,
      h("p", { class: "meta" }, "Kept for this browser session only (sessionStorage). Leave empty if the gateway runs without keys."),
      h("button", { type: "submit" }, "Open my jobs"));
    show("API key", h("h1", {}, "Sign in with your API key"), message ? h("p", { class: "error", role: "alert" }, message) : "", form);
    input.focus();
    document.body.dataset.rendered = "key";
  }
  changeKey.hidden = MODE !== "api";
  changeKey.addEventListener("click", () => {
    sessionStorage.removeItem(KEY_ITEM);
    generation++;
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
    keyForm();
  });

  // --- jobs (live progress) ---
  async function jobsPage(gen) {
    setCrumbs([["Jobs", null]]);
    const body = h("tbody", {});
    const table = h("table", { class: "jobs" },
      h("caption", { class: "meta" }, MODE === "api" ? "Your jobs, newest first; progress refreshes every 2 seconds." : "This report"),
      h("thead", {}, h("tr", {}, ["Job", "Status", "Stage", "Progress", "Images", ""].map((t) => h("th", { scope: "col" }, t)))),
      body);
    show("Jobs", h("h1", {}, MODE === "api" ? "Jobs" : "Result"), table);
    const fill = async () => {
      const answer = await data.jobs();
      if (gen !== generation) return false;
      body.replaceChildren(...answer.jobs.map((job) => {
        const stages = Object.entries(job.progress || {});
        const progress = h("ul", { class: "facts" }, stages.map(([stage, p]) =>
          h("li", {}, `${stage} `, h("progress", { max: p.total || 1, value: p.done, "aria-label": `${stage} ${p.done} of ${p.total}` }), ` ${p.done}/${p.total}`)));
        const open = job.status === "succeeded" ? h("a", { href: route.tree(job.id) }, "Explore") : "";
        return h("tr", { "data-job": job.id },
          h("td", {}, job.title || h("code", {}, job.id.slice(0, 12))),
          h("td", { class: "status-" + job.status }, job.status),
          h("td", {}, job.stage || ""),
          h("td", {}, stages.length ? progress : "–"),
          h("td", {}, count(job.images || 0)),
          h("td", {}, open));
      }));
      if (!answer.jobs.length) body.append(h("tr", {}, h("td", { colspan: 6 }, "No jobs yet. Submit one with POST /v1/jobs.")));
      return true;
    };
    if (!(await fill())) return;
    rendered("jobs");
    if (MODE === "api") {
      pollTimer = setInterval(() => { fill().catch(() => {}); }, 2000);
    }
  }

  // --- the concept tree ---
  function nodeFacts(n) {
    const parts = [h("span", { class: "badge" }, `level ${n.level}`), `${count(n.size)} images`];
    if (n.label_quality !== undefined) parts.push(`label quality ${fmt(n.label_quality)}`);
    if (n.reliable_share !== undefined) parts.push(`${pct(n.reliable_share)} of ${n.neurons} neurons reliable`);
    if (n.selective_share !== undefined && n.selective_share !== null) parts.push(`${pct(n.selective_share)} selective`);
    return h("span", { class: "meta" }, ...parts.flatMap((p, i) => (i ? [" · ", p] : [p])));
  }
  function treeList(job, parent, answer) {
    const list = h("ul", parent ? { role: "group" } : { class: "tree", "aria-label": "Concepts" });
    const addRows = (ans) => {
      for (const n of ans.items) list.append(treeRow(job, n));
      const left = ans.total - (ans.offset + ans.items.length);
      if (left > 0) {
        const more = h("li", {}, h("button", { type: "button", onclick: async () => {
          more.remove();
          addRows(await data.children(job, parent, ans.offset + ans.items.length));
        } }, `Show ${Math.min(left, PAGE)} more of ${left}`));
        list.append(more);
      }
    };
    addRows(answer);
    return list;
  }
  function treeRow(job, n) {
    const li = h("li", { "data-concept": n.id });
    const link = h("a", { href: route.concept(job, n.id) }, n.label);
    let toggle = h("span", { class: "toggle-space" });
    if (n.children) {
      toggle = h("button", { type: "button", class: "toggle", "aria-expanded": "false", "aria-label": `Show the ${n.children} concepts under “${n.label}”` }, "+");
      let sub = null;
      toggle.addEventListener("click", async () => {
        const open = toggle.getAttribute("aria-expanded") === "true";
        if (open) { sub.hidden = true; toggle.setAttribute("aria-expanded", "false"); toggle.textContent = "+"; return; }
        if (!sub) { sub = treeList(job, n.id, await data.children(job, n.id, 0)); li.append(sub); }
        sub.hidden = false; toggle.setAttribute("aria-expanded", "true"); toggle.textContent = "−";
      });
    }
    li.append(h("div", { class: "row" }, toggle, link, nodeFacts(n)));
    return li;
  }
  async function treePage(gen, job) {
    const [summary, top] = await Promise.all([data.summary(job), data.children(job, null, 0)]);
    if (gen !== generation) return;
    setCrumbs([["Jobs", route.jobs()], [summary.title || "Concepts", null]]);
    const u = summary.uncertainty || {};
    const facts = h("ul", { class: "facts" },
      h("li", {}, h("b", {}, count(summary.images)), " images"),
      h("li", {}, h("b", {}, count(summary.concepts)), " concepts"),
      h("li", {}, h("b", {}, summary.levels.length), " levels"),
      h("li", {}, "layers ", summary.layers.map((l) => l.name).join(", ")),
      u.reliable_share !== undefined ? h("li", {}, h("b", {}, pct(u.reliable_share)), " of memberships reliable") : "",
      u.significant_share !== undefined && u.significant_share !== null ? h("li", {}, h("b", {}, pct(u.significant_share)), " selective (more active in the concept than in the rest of the images)") : "",
      u.generic_neurons !== undefined ? h("li", {}, h("b", {}, count(u.generic_neurons)), " generic neurons (active in at least min_support of all images)") : "",
      summary.labelling && summary.labelling.source ? h("li", {}, "labels: ", summary.labelling.source) : "");
    const input = h("input", { id: "search", type: "search", placeholder: "e.g. snowy forest", autocomplete: "off" });
    const results = h("div", { id: "results", "aria-live": "polite" });
    const form = h("form", { class: "search", role: "search", onsubmit: async (e) => {
      e.preventDefault();
      const q = input.value.trim();
      const answer = await data.search(job, q);
      results.replaceChildren(
        h("h2", {}, `${answer.total} concept${answer.total === 1 ? "" : "s"} match “${q}”`),
        h("ol", { class: "results" }, answer.items.map((n) => h("li", {},
          h("a", { href: route.concept(job, n.id) }, n.label), " ", nodeFacts(n),
          n.path && n.path.length ? h("div", { class: "meta" }, "in: ", n.path.map((p) => p.label).join(" › ")) : ""))));
    } }, h("label", { for: "search" }, "Search labels "), input, " ", h("button", { type: "submit" }, "Search"));
    show("Concepts", h("h1", {}, "Concept tree"), facts, form, results,
      h("h2", {}, "All levels (top first; open a branch with its + button)"), treeList(job, null, top));
    rendered("tree");
  }

  // --- a concept ---
  function strip(job, layer) {
    return h("ul", { class: "strip", "aria-label": `Neurons of ${layer.layer}` }, layer.neurons.map((n) => {
      const iv = n.interval;
      const label = `${layer.layer} channel ${n.channel}: support ${fmt(n.support)}` + (iv ? `, interval ${fmt(iv[0])} to ${fmt(iv[1])}` : "") +
        (n.reliable === false ? ", not reliable" : n.reliable ? ", reliable" : "") +
        (n.selective === false ? ", not selective" : n.selective ? `, selective (q ${fmt(n.q_value, 4)})` : "") +
        (n.generic ? `, generic: active in ${pct(n.collection_rate)} of all images` : "") + (n.difference ? ", difference neuron" : "");
      const bar = h("span", { class: "bar", "aria-hidden": "true" },
        iv ? h("span", { class: "iv", style: `left:${iv[0] * 100}%;width:${Math.max(1, (iv[1] - iv[0]) * 100)}%` }) : "",
        h("span", { class: "sup", style: `left:calc(${n.support * 100}% - 1px)` }));
      return h("li", {}, h("a", { href: route.neuron(job, layer.layer, n.channel), title: label, "aria-label": label,
        class: [n.difference ? "diff" : "", n.reliable === false ? "unreliable" : "", n.generic ? "generic" : ""].join(" ").trim() || null },
        h("span", { class: "ch" }, n.channel), bar, h("span", {}, fmt(n.support))));
    }));
  }
  function loadThumbs(job, container, gen) {
    const imgs = [...container.querySelectorAll("img[data-thumb]")];
    let next = 0;
    const worker = async () => {
      while (next < imgs.length && gen === generation) {
        const img = imgs[next++];
        try { img.src = await data.thumb(job, img.dataset.thumb); } catch (e) { img.replaceWith(h("span", { class: "noimg" }, img.alt)); }
      }
    };
    return Promise.all([0, 1, 2, 3, 4, 5].map(worker));
  }
  function figure(img, index, note) {
    const caption = img.caption || img.file_name;
    const alt = `Image ${index + 1}: ${caption}`;
    return h("li", {}, h("figure", { class: "thumb", tabindex: "0", "data-image": img.id, title: caption },
      img.thumb ? h("img", { alt, "data-thumb": img.id, width: 160, height: 160, style: "object-fit:contain" }) :
        h("span", { class: "noimg", role: "img", "aria-label": alt }, img.file_name),
      h("figcaption", {}, caption, note ? ` (${note})` : "")));
  }
  function grid(job, images, start, gen, noteOf) {
    const list = h("ul", { class: "grid", "aria-label": "Images" }, images.map((img, i) => figure(img, start + i, noteOf ? noteOf(img) : null)));
    loadThumbs(job, list, gen);
    return list;
  }
  function statsTable(u) {
    if (!u) return h("p", { class: "meta" }, "No uncertainty statistics in this result.");
    const rows = [];
    if (u.stability !== undefined) rows.push(["Stability (bootstrap Jaccard)", fmt(u.stability), "", ""]);
    const c = u.causal;
    // decisions read the q-value: Benjamini-Hochberg across all concepts of the job
    const decided = (t) => pval(t.p_value) + (t.q_value !== undefined && t.q_value !== null ? `, q ${pval(t.q_value)} across concepts` : "") + (t.significant ? " (significant)" : "");
    if (c) {
      rows.push(["Causal effect (group ablated vs random sets)", fmt(c.effect, 3), c.interval ? `${fmt(c.interval[0], 3)} to ${fmt(c.interval[1], 3)}` : "–", decided(c)]);
      if (c.keep_only) rows.push(["Keep only the group", fmt(c.keep_only.effect, 3), c.keep_only.interval ? `${fmt(c.keep_only.interval[0], 3)} to ${fmt(c.keep_only.interval[1], 3)}` : "–", decided(c.keep_only)]);
    }
    const d = u.difference_test;
    if (d) rows.push(["Difference neurons carried (child vs siblings)", `${pct(d.child_carrier_share)} vs ${pct(d.sibling_carrier_share)}`, "", decided(d)]);
    const e = u.predictive_entropy;
    if (e) rows.push(["Model unsure (predictive entropy, nats): aleatoric + epistemic", fmt(e.total, 3), `${fmt(e.aleatoric, 3)} (in the images) + ${fmt(e.epistemic, 3)} (the model lacks knowledge)`, ""]);
    if (!rows.length) return h("p", { class: "meta" }, "No uncertainty statistics for this concept.");
    return h("table", { class: "stats" }, h("thead", {}, h("tr", {}, ["Statistic", "Value", "Interval", "p-value"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, h("th", { scope: "row" }, r[0]), ...r.slice(1).map((x) => h("td", {}, x))))));
  }
  function relatives(job, c) {
    const links = (items) => h("ul", {}, items.map((r) => h("li", {}, h("a", { href: route.concept(job, r.id) }, r.label), h("span", { class: "meta" }, ` (${count(r.size)})`))));
    const siblings = h("ul", {}, c.siblings.map((r) => h("li", {},
      h("a", { href: route.concept(job, r.id) }, r.label), " ",
      h("a", { href: route.compare(job, c.id, r.id), class: "meta", "aria-label": `Compare with ${r.label}` }, "compare"))));
    return h("div", { class: "relatives" },
      h("section", {}, h("h3", {}, "Parent"), c.parent ? links([c.parent]) : h("p", { class: "meta" }, "None: a top-level concept.")),
      h("section", {}, h("h3", {}, `Children (${c.children})`), c.children ? links(c.children_links) : h("p", { class: "meta" }, "None: a finest-level concept.")),
      h("section", {}, h("h3", {}, `Siblings (${c.siblings_total})`), c.siblings_total ? siblings : h("p", { class: "meta" }, "None.")));
  }
  async function conceptPage(gen, job, id, page) {
    const c = await data.concept(job, id);
    const images = page ? await data.images(job, id, page) : c.images_page;
    if (gen !== generation) return;
    setCrumbs([["Jobs", route.jobs()], ["Concepts", route.tree(job)], ...c.path.map((p) => [p.label, route.concept(job, p.id)]), [c.label, null]]);
    const pager = () => h("nav", { class: "pager", "aria-label": "Image pages" },
      h("a", { href: images.page > 0 ? route.concept(job, id, images.page - 1) : null, "aria-disabled": images.page > 0 ? null : "true", rel: "prev" }, "‹ Previous"),
      h("span", {}, `Page ${images.page + 1} of ${images.pages}`),
      h("a", { href: images.page + 1 < images.pages ? route.concept(job, id, images.page + 1) : null, "aria-disabled": images.page + 1 < images.pages ? null : "true", rel: "next" }, "Next ›"));
    const first = images.page * images.page_size;
    show(c.label,
      h("h1", {}, c.label),
      h("ul", { class: "facts" },
        h("li", {}, h("span", { class: "badge" }, `level ${c.level}`)),
        h("li", {}, h("b", {}, count(c.size)), " images"),
        h("li", {}, "label quality ", h("b", {}, fmt(c.label_quality))),
        h("li", {}, h("b", {}, pct(c.reliable_share)), ` of ${c.neurons} neurons reliable`),
        h("li", {}, "label by ", c.label_source || "–")),
      c.label_warning ? h("p", { class: "error" }, c.label_warning) : "",
      c.difference_description || c.difference_count ? h("p", { class: "apart" },
        h("b", {}, "What sets it apart" + (c.parent ? ` from “${c.parent.label}”` : "") + ": "),
        c.difference_description || "(no description)",
        ` — ${c.difference_count} difference neuron${c.difference_count === 1 ? "" : "s"}, marked Δ below.`) : "",
      h("h2", { id: "images" }, `Images (${count(images.total)}; ${first + 1}–${first + images.items.length} shown)`),
      pager(), grid(job, images.items, first, gen), images.pages > 1 ? pager() : "",
      h("h2", {}, "Statistics"), statsTable(c.uncertainty),
      h("h2", {}, `Neuron group (${c.neurons})`),
      h("p", { class: "legend" }, "Each cell: channel, a bar with the support (dark line) and its interval (blue), the support. Δ with an orange frame: a difference neuron (in this group, not the parent's). Dashed frame: not reliable (the interval reaches below min_support). Dotted grey: generic, active in most of all images, so not specific to this concept. Hover a cell for selectivity: whether the neuron is more active here than in the rest of the images."),
      c.layers.length ? c.layers.map((l) => [h("h3", {}, `${l.layer} (${l.neurons.length}${l.channels ? ` of ${l.channels}` : ""})`), strip(job, l)]) : h("p", { class: "meta" }, "No neuron is common to this concept's images."),
      h("h2", {}, "Related concepts"), relatives(job, c));
    rendered("concept");
  }

  // --- a neuron ---
  async function neuronPage(gen, job, layer, ch) {
    const n = await data.neuron(job, layer, ch);
    if (gen !== generation) return;
    setCrumbs([["Jobs", route.jobs()], ["Concepts", route.tree(job)], [`${layer} / ${ch}`, null]]);
    const rows = n.concepts.map((c) => h("tr", { class: c.difference ? "diff" : null },
      h("td", {}, h("a", { href: route.concept(job, c.id) }, c.label)), h("td", {}, c.level), h("td", {}, count(c.size)),
      h("td", {}, fmt(c.support)), h("td", {}, c.interval ? `${fmt(c.interval[0])} to ${fmt(c.interval[1])}` : "–"),
      h("td", {}, c.reliable === null || c.reliable === undefined ? "–" : c.reliable ? "yes" : "no"),
      h("td", {}, c.selective === null || c.selective === undefined ? "–" : c.selective ? "yes" : c.generic ? "no (generic)" : "no"), h("td", {}, c.difference ? "Δ yes" : "")));
    show(`Neuron ${layer}/${ch}`,
      h("h1", {}, `Neuron ${layer} / channel ${ch}`),
      h("h2", {}, `Concepts whose group holds it (${n.concepts.length})`),
      n.concepts.length ? h("table", {}, h("thead", {}, h("tr", {}, ["Concept", "Level", "Images", "Support", "Interval", "Reliable", "Selective", "Difference"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows))
        : h("p", { class: "meta" }, "No concept's group holds this neuron."),
      h("h2", {}, `Most strongly activating images (${n.top_images.length})`),
      n.top_images.length ? grid(job, n.top_images, 0, gen, (img) => `activation ${fmt(img.activation)}`) : h("p", { class: "meta" }, "No stored activations."));
    rendered("neuron");
  }

  // --- two siblings side by side ---
  async function comparePage(gen, job, a, b) {
    const [A, B] = await Promise.all([data.concept(job, a), data.concept(job, b)]);
    if (gen !== generation) return;
    setCrumbs([["Jobs", route.jobs()], ["Concepts", route.tree(job)], [A.label, route.concept(job, a)], [`compared with ${B.label}`, null]]);
    const keys = (c) => new Map(c.layers.flatMap((l) => l.neurons.map((n) => [`${l.layer}/${n.channel}`, [l.layer, n.channel]])));
    const ka = keys(A), kb = keys(B);
    const chips = (entries, cls) => entries.length ? h("ul", { class: "chips " + (cls || "") }, entries.map(([k, [layer, ch]]) => h("li", {}, h("a", { href: route.neuron(job, layer, ch) }, k))))
      : h("p", { class: "meta" }, "None.");
    const shared = [...ka].filter(([k]) => kb.has(k));
    const column = (X, own, other) => h("section", { "aria-label": X.label },
      h("h2", {}, h("a", { href: route.concept(job, X.id) }, X.label)),
      h("p", { class: "meta" }, `level ${X.level} · ${count(X.size)} images · label quality ${fmt(X.label_quality)}`),
      X.difference_description ? h("p", { class: "apart" }, X.difference_description) : "",
      h("h3", {}, `Only in this concept's group (${[...own].filter(([k]) => !other.has(k)).length})`),
      chips([...own].filter(([k]) => !other.has(k)), "apart-chips"),
      grid(job, X.images_page.items.slice(0, 8), 0, gen));
    show(`${A.label} vs ${B.label}`, h("h1", {}, "Two concepts side by side"),
      h("h2", {}, `Shared neurons (${shared.length})`), chips(shared),
      h("div", { class: "compare" }, column(A, ka, kb), column(B, kb, ka)));
    rendered("compare");
  }

  // --- routing ---
  let routeStart = 0;
  async function dispatch() {
    const gen = ++generation;
    routeStart = timings.length ? performance.now() : 0;
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
    blobUrls.forEach((u) => URL.revokeObjectURL(u));
    blobUrls = [];
    delete document.body.dataset.rendered;
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
    if (MODE === "api" && api.key() === null) return keyForm();
    try {
      if (parts[0] !== "job") await jobsPage(gen);
      else if (parts.length === 2) await treePage(gen, parts[1]);
      else if (parts[2] === "concept") await conceptPage(gen, parts[1], parts[3], parts[4] === "page" ? Math.max(0, Number(parts[5]) - 1) : 0);
      else if (parts[2] === "neuron") await neuronPage(gen, parts[1], parts[3], Number(parts[4]));
      else if (parts[2] === "compare") await comparePage(gen, parts[1], parts[3], parts[4]);
      else await jobsPage(gen);
      if (gen === generation && timings.length > 1) focusHeading();
    } catch (err) {
      if (gen === generation) fail(err);
    }
  }
  window.addEventListener("hashchange", dispatch);
  dispatch();
})();
