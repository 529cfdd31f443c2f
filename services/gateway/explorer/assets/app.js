// Neuron Atlas explorer: one page, hash routes, no build step and no third-party code.
// Two data sources with one interface: "api" (the gateway's /ui/api, API key in sessionStorage)
// and "static" (the report folder: data/*.js scripts, which load from disk where fetch cannot).
// A report opens on its result (the overview); on the gateway "#/" is the tenant's jobs list.
// Plots arrive as SVG text drawn by Python (services/gateway/explorer/plots.py) and are parsed
// with DOMParser as SVG, never as HTML: nothing in them runs, and their colours are presentation
// attributes, which the Content-Security-Policy allows where it refuses style attributes.
"use strict";
(function () {
  const MODE = document.querySelector('meta[name="atlas-mode"]').content;
  // what a static folder opens on: a result (`neuron-atlas report`) or a comparison (`compare`)
  const VIEW = (document.querySelector('meta[name="atlas-view"]') || { content: "result" }).content;
  const KEY_ITEM = "neuron-atlas-api-key";
  const SVGNS = "http://www.w3.org/2000/svg";
  const main = document.getElementById("main");
  const crumbs = document.getElementById("crumbs");
  const changeKey = document.getElementById("change-key");
  const timings = (window.atlasTimings = []);
  let generation = 0; // bumps on every route change: late answers of an old page are dropped
  let blobUrls = [];
  let pollTimer = null;
  let observer = null; // lazy thumbnails of the tree

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
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const fmt = (x, d = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
  const signed = (x, d = 2) => (x === null || x === undefined ? "–" : (x > 0 ? "+" : "") + Number(x).toFixed(d));
  const pct = (x) => (x === null || x === undefined ? "–" : Math.round(x * 100) + "%");
  const pval = (p) => (p === null || p === undefined ? "–" : p < 0.001 ? p.toExponential(1) : p.toFixed(3));
  const count = (n) => Number(n).toLocaleString("en");
  const plural = (n, word) => `${count(n)} ${word}${n === 1 ? "" : "s"}`;
  const interval = (iv, d = 2) => (iv ? `${fmt(iv[0], d)} to ${fmt(iv[1], d)}` : "–");
  const enc = encodeURIComponent;
  const route = {
    home: () => "#/",
    tree: (job) => `#/job/${enc(job)}`,
    concept: (job, id, page) => `#/job/${enc(job)}/concept/${enc(id)}` + (page ? `/page/${page + 1}` : ""),
    neuron: (job, layer, ch) => `#/job/${enc(job)}/neuron/${enc(layer)}/${ch}`,
    compare: (job, a, b) => `#/job/${enc(job)}/compare/${enc(a)}/${enc(b)}`,
    comparison: (id) => `#/comparison/${enc(id)}`,
    cmpConcept: (id, cid) => `#/comparison/${enc(id)}/concept/${enc(cid)}`,
  };
  // the breadcrumbs' first steps: the jobs list (gateway only), then the result's overview
  const base = (job, title) => [...(MODE === "api" ? [["Jobs", route.home()]] : []), [title || "Overview", route.tree(job)]];

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
    // a comparison's id, or a multi-model job's "JOB~KEY" (its baseline against model KEY)
    cmp: (id) => id.includes("~") ? `${api.job(id.split("~")[0])}/comparisons/${enc(id.split("~")[1])}` : `api/comparisons/${enc(id)}`,
    cmpSummary: (id) => api.get(`${api.cmp(id)}/summary`),
    cmpChildren: (id, parent) => api.get(`${api.cmp(id)}/children` + (parent ? `?parent=${enc(parent)}` : "")),
    cmpChanged: (id) => api.get(`${api.cmp(id)}/changed`),
    cmpConcept: (id, cid) => api.get(`${api.cmp(id)}/concepts/${enc(cid)}`),
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
    thumb: async (job, id) => `thumbs/${id}.webp`,  // unpacked beside the pages by `report`
    cmpSummary: () => load("comparison/summary", "comparison/summary.js"),
    cmpChildren: (id, parent) => load(`comparison/children/${parent || "_top"}`, `comparison/children/${parent || "_top"}.js`),
    cmpChanged: () => load("comparison/changed", "comparison/changed.js"),
    cmpConcept: (id, cid) => load(`comparison/concept/${cid}`, `comparison/concept/${cid}.js`),
  };
  const data = MODE === "static" ? local : api;

  // --- page frame ---
  function setCrumbs(items) {
    crumbs.replaceChildren(...items.map(([text, href], i) => h("li", {},
      href && i < items.length - 1 ? h("a", { href }, text) : h("span", { "aria-current": "page" }, text))));
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

  // --- plots: SVG text from the data layer ---
  function plot(text, job) {
    if (!text) return null;
    const doc = new DOMParser().parseFromString(text, "image/svg+xml");
    if (doc.documentElement.namespaceURI !== SVGNS) return null; // a parse error
    const svg = document.importNode(doc.documentElement, true);
    // marks of a neuron or a concept link to its page (by pointer; the keyboard has the strips
    // and tables, which hold the same links, so Tab does not stop at every dot)
    for (const mark of svg.querySelectorAll("[data-channel], [data-concept]")) {
      const a = document.createElementNS(SVGNS, "a");
      const href = mark.dataset.concept ? route.concept(job, mark.dataset.concept) : route.neuron(job, mark.dataset.layer, mark.dataset.channel);
      a.setAttribute("href", href);
      a.setAttribute("tabindex", "-1");
      mark.replaceWith(a);
      a.append(mark);
    }
    return h("figure", { class: "plot-frame" }, svg);
  }

  // --- thumbnails ---
  const queue = []; // {img, job, gen}: thumbnails to load, six at a time
  let inFlight = 0;
  function pump() {
    while (inFlight < 6 && queue.length) {
      const { img, job, gen } = queue.shift();
      if (gen !== generation) continue; // a page left since
      inFlight++;
      data.thumb(job, img.dataset.thumb)
        .then((url) => { img.src = url; }, () => img.replaceWith(h("span", { class: "noimg" }, img.alt)))
        .finally(() => { inFlight--; pump(); });
    }
  }
  function loadThumbs(job, container, gen) {
    // a grid: every thumbnail now
    for (const img of container.querySelectorAll("img[data-thumb]")) queue.push({ img, job, gen });
    pump();
  }
  function lazyThumbs(job, container, gen) {
    // the tree: a row's thumbnails load when it comes near the viewport
    if (!("IntersectionObserver" in window)) return loadThumbs(job, container, gen);
    if (!observer) {
      observer = new IntersectionObserver((entries) => {
        for (const e of entries) {
          if (!e.isIntersecting) continue;
          observer.unobserve(e.target);
          queue.push({ img: e.target, job, gen });
        }
        pump();
      }, { rootMargin: "300px" });
    }
    for (const img of container.querySelectorAll("img[data-thumb]")) observer.observe(img);
  }
  function figure(img, index, note) {
    const caption = img.caption || img.file_name;
    const alt = `Image ${index + 1}: ${caption}`;
    return h("li", {}, h("figure", { class: "thumb", tabindex: "0", "data-image": img.id, title: caption },
      img.thumb ? h("img", { alt, "data-thumb": img.id, width: 160, height: 160 }) :
        h("span", { class: "noimg", role: "img", "aria-label": alt }, img.file_name),
      h("figcaption", {}, caption, note ? ` (${note})` : "")));
  }
  function grid(job, images, start, gen, noteOf) {
    const list = h("ul", { class: "grid", "aria-label": "Images" }, images.map((img, i) => figure(img, start + i, noteOf ? noteOf(img) : null)));
    loadThumbs(job, list, gen);
    return list;
  }
  function typicalStrip(n) {
    if (!n.typical || !n.typical.length) return h("span", { class: "typical typical-empty" });
    return h("ul", { class: "typical", "aria-label": `Most typical images of “${n.label}”` }, n.typical.map((img) => h("li", {},
      img.thumb ? h("img", { alt: img.caption || img.file_name, title: img.caption || img.file_name, "data-thumb": img.id, width: 44, height: 44 })
        : h("span", { class: "noimg", role: "img", "aria-label": img.caption || img.file_name }, "·"))));
  }

  // --- evidence in words (the CLI's wording; "not tested" states say why) ---
  function badges(n) {
    const out = [];
    const s = n.specificity;
    if (s) {
      const why = s.status === "tested"
        ? `Specificity, on held-out images: effect ${signed(s.effect)}, q ${pval(s.q_value)}`
        : "Specificity test: " + s.text;
      out.push(h("span", { class: "chip chip-" + s.kind, title: why }, s.text));
    }
    if (n.selective !== null && n.selective !== undefined) {
      out.push(h("span", { class: "chip", title: "Neurons of its group that are more active in this concept than in the rest of the images (q ≤ alpha)" },
        `${n.selective}/${n.neurons} selective`));
    }
    if (n.too_few_images) out.push(h("span", { class: "chip chip-untested", title: "No count of its images can clear min_support: too few images to tell whether a membership is reliable" }, "reliability: too few images to tell"));
    else if (n.reliable !== null && n.reliable !== undefined) out.push(h("span", { class: "chip", title: "Memberships whose interval's lower bound clears min_support" }, `${pct(n.reliable_share)} reliable`));
    return out;
  }
  function nodeFacts(n) {
    const parts = [h("span", { class: "badge" }, `level ${n.level}`), plural(n.size, "image")];
    if (n.children) parts.push(plural(n.children, "sub-concept"));
    return h("span", { class: "meta" }, ...parts.flatMap((p, i) => (i ? [" · ", p] : [p])));
  }
  function reliableText(r) { return r === null || r === undefined ? "too few images to tell" : r ? "yes" : "no"; }
  function selectiveText(x) {
    if (x.selective === null || x.selective === undefined) return "–";
    return x.selective ? `yes (q ${pval(x.q_value)})` : `no, generic here (q ${pval(x.q_value)})`;
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

  // --- jobs (the gateway only; live progress) ---
  async function jobsPage(gen) {
    setCrumbs([["Jobs", null]]);
    const body = h("tbody", {});
    const table = h("table", { class: "jobs" },
      h("caption", { class: "meta" }, "Your jobs, newest first; progress refreshes every 2 seconds."),
      h("thead", {}, h("tr", {}, ["Job", "Status", "Stage", "Progress", "Images", ""].map((t) => h("th", { scope: "col" }, t)))),
      body);
    const cmpInput = h("input", { id: "comparison-id", type: "text", autocomplete: "off", spellcheck: "false", placeholder: "32 hex digits" });
    const openForm = h("form", { class: "openform", onsubmit: (e) => {
      e.preventDefault();
      const value = cmpInput.value.trim();
      if (value) location.hash = route.comparison(value);
    } }, h("label", { for: "comparison-id" }, "Open a comparison of two jobs (its id from POST /v1/comparisons) "), cmpInput, " ", h("button", { type: "submit" }, "Open"));
    show("Jobs", h("h1", {}, "Jobs"), table, h("h2", {}, "Comparisons"), openForm);
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
    pollTimer = setInterval(() => { fill().catch(() => {}); }, 2000);
  }

  // --- the overview: the concept tree as an atlas, and the job's evidence ---
  function treeList(job, parent, answer, gen) {
    const list = h("ul", parent ? { role: "group" } : { class: "tree", "aria-label": "Concepts" });
    const addRows = (ans) => {
      const rows = ans.items.map((n) => treeRow(job, n, gen));
      list.append(...rows);
      for (const row of rows) lazyThumbs(job, row.querySelector(".row"), gen);
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
  function treeRow(job, n, gen) {
    const li = h("li", { "data-concept": n.id });
    const link = h("a", { href: route.concept(job, n.id), class: "concept-link" }, n.label);
    let toggle = h("span", { class: "toggle-space" });
    if (n.children) {
      toggle = h("button", { type: "button", class: "toggle", "aria-expanded": "false", "aria-label": `Show the ${n.children} concepts under “${n.label}”` }, "+");
      let sub = null;
      toggle.addEventListener("click", async () => {
        const open = toggle.getAttribute("aria-expanded") === "true";
        if (open) { sub.hidden = true; toggle.setAttribute("aria-expanded", "false"); toggle.textContent = "+"; return; }
        if (!sub) { sub = treeList(job, n.id, await data.children(job, n.id, 0), gen); li.append(sub); }
        sub.hidden = false; toggle.setAttribute("aria-expanded", "true"); toggle.textContent = "−";
      });
    }
    li.append(h("div", { class: "row" }, toggle, typicalStrip(n),
      h("div", { class: "about" }, link, " ", nodeFacts(n), h("div", { class: "chips-row" }, badges(n)))));
    return li;
  }
  function modelUncertaintyWords(mu) {
    if (!mu) return null;
    const how = mu.method === "mc_dropout" ? "the model's own dropout (MC dropout)" : `dropout injected at rate ${fmt(mu.dropout_rate)}`;
    const read = mu.interpretation === "epistemic"
      ? "read as epistemic uncertainty (the model's own), beside aleatoric (in the images)"
      : "read as sensitivity to feature dropout, not as the model's own uncertainty (the rate was not calibrated on labelled images)";
    return h("p", { class: "method" }, h("b", {}, "Dropout passes: "), `${how}, ${mu.samples} passes on ${plural(mu.images, "sampled image")}; mutual information is ${read}.`,
      mu.calibration ? ` Calibration: ${mu.calibration.finding}` : "");
  }
  function planTable(plan) {
    if (!plan) return null;
    const budget = plan.budget === "full" ? "full (every method on every image and concept)" : `${plan.budget} forward-pass equivalents per image`;
    const rows = plan.steps.map((s) => {
      const tests = s.tested !== null && s.tested !== undefined
        ? `${s.tested} tested; not tested: ${s.not_tested_budget || 0} budget, ${s.not_tested_too_few_images || 0} too few images` : "";
      return h("tr", { class: s.ran ? null : "not-run" }, h("th", { scope: "row" }, s.name), h("td", {}, s.ran ? "ran" : "not run"),
        h("td", {}, s.images === null || s.images === undefined ? "–" : count(s.images)), h("td", {}, [tests, tests && s.note ? "; " : "", s.note].join("")));
    });
    return [h("p", {}, `Budget: ${budget}; planned ${fmt(plan.planned, 0)}` + (plan.allowed !== null ? ` of ${fmt(plan.allowed, 0)} allowed.` : ".")),
      h("table", { class: "plan" }, h("thead", {}, h("tr", {}, ["Step", "Ran", "Images", "What it did"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows))];
  }
  async function overviewPage(gen, job) {
    const [summary, top] = await Promise.all([data.summary(job), data.children(job, null, 0)]);
    if (gen !== generation) return;
    setCrumbs(base(job, summary.title));
    const u = summary.uncertainty;
    const target = (summary.models || {}).target || {};
    const facts = h("ul", { class: "facts" },
      h("li", {}, h("b", {}, count(summary.images)), " images"),
      h("li", {}, h("b", {}, count(summary.concepts)), " concepts"),
      h("li", {}, h("b", {}, summary.levels.length), " levels"),
      h("li", {}, "layers ", summary.layers.map((l) => l.name).join(", ")),
      target.architecture ? h("li", {}, "model ", h("b", {}, target.architecture), target.weights ? ` (${target.weights})` : "") : "",
      summary.labelling && summary.labelling.source ? h("li", {}, "labels: ", summary.labelling.source) : "");
    // a multi-model job: its baseline against each other model, in the comparison view
    const comparisons = MODE === "api" && summary.comparisons ? h("p", { class: "job-comparisons" }, "This job explained several models; its tree is the baseline's. Compare: ",
      summary.comparisons.map((c, i) => [i ? ", " : "", h("a", { href: route.comparison(`${job}~${c.key}`), "data-model": c.key }, `${c.baseline} against ${c.key}`)]), ".") : "";
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
    const pruningStep = u && u.plan ? u.plan.steps.find((s) => s.name === "pruning curve") : null;
    const warnings = (summary.warnings || []).map((w) => h("p", { class: "error" }, w.message || w.text || JSON.stringify(w)));
    show(summary.title ? `Result: ${summary.title}` : "Result",
      h("h1", {}, summary.title ? `Result: ${summary.title}` : "Result"), facts, comparisons, warnings,
      h("nav", { class: "toc", "aria-label": "On this page" }, h("ul", {},
        [["#concepts", "Concepts"], ["#evidence", "Evidence at a glance"], ["#pruning", "Pruning"], ["#plan", "What ran"], ["#tests", "Tests and their nulls"]]
          .map(([id, text]) => h("li", {}, h("a", { href: id, onclick: (e) => {
          // in-page links, not routes: scroll there and move the focus along (keyboard users)
          e.preventDefault();
          const target = document.querySelector(id);
          target.setAttribute("tabindex", "-1");
          target.focus();
        } }, text))))),
      form, results,
      h("h2", { id: "concepts" }, "Concepts"),
      h("p", { class: "legend" }, `Top level first; open a concept's sub-concepts with its + button. Each row shows the concept's ${summary.typical} most typical images: ${summary.typical_source}. `,
        "Then its evidence: whether zeroing its group hurts its own held-out images more than other images (specific, not specific, or why it was not tested), how many of its neurons are selective here, and whether their support is reliable."),
      treeList(job, null, top, gen),
      h("h2", { id: "evidence" }, "Evidence at a glance"),
      plot(summary.plots.summary, job),
      u && u.summary ? h("ul", { class: "facts", "data-fact": "stability" },
        h("li", {}, "mean group stability ", h("b", {}, fmt(u.summary.mean_group_stability)), " (groups recomputed on bootstrap resamples of the images, the clustering held fixed)"),
        h("li", {}, "mean clustering stability ", h("b", {}, fmt(u.summary.mean_clustering_stability)), " (FINCH run again on subsamples of the captions)")) : "",
      u ? modelUncertaintyWords(u.model_uncertainty) : h("p", { class: "meta" }, "The uncertainty stage did not run for this result."),
      h("h2", { id: "pruning" }, "Pruning"),
      u && u.pruning ? [h("p", {}, h("b", {}, "Verdict: "), u.pruning.verdict),
        plot(summary.plots.pruning, job),
        h("p", { class: "legend" }, `Measured on ${plural(u.pruning.heldout_images, "held-out image")}; which neurons are in no selective membership was decided on the other ${count(u.pruning.selection_images)}. Random prunings: ${u.pruning.random_sets} per point, the band holding the middle 95% of them.`)]
        : h("p", { class: "meta" }, pruningStep ? `Not run: ${pruningStep.note.replace(/^not run: /, "")}` : "Not run."),
      h("h2", { id: "plan" }, "What ran (the uncertainty budget's plan)"),
      u ? planTable(u.plan) : h("p", { class: "meta" }, "Nothing: the uncertainty stage was off."),
      h("h2", { id: "tests" }, "The tests and their nulls"),
      u && u.tests.length ? h("dl", { class: "tests" }, u.tests.map((t) => [h("dt", {}, t.name), h("dd", {}, h("span", { class: "null" }, "Null: ", t.null), " ", h("span", { class: "meta" }, `Statistic: ${t.statistic}. ${t.multiple_testing}.`))]))
        : h("p", { class: "meta" }, "None."));
    rendered("overview");
  }

  // --- a concept ---
  function strip(job, layer) {
    return h("ul", { class: "strip", "aria-label": `Neurons of ${layer.layer}` }, layer.neurons.map((n) => {
      const iv = n.interval;
      const label = `${layer.layer} channel ${n.channel}: support ${fmt(n.support)}` + (iv ? `, interval ${fmt(iv[0])} to ${fmt(iv[1])}` : "") +
        (n.reliable === false ? ", not reliable" : n.reliable ? ", reliable" : n.interval ? ", reliability: too few images to tell" : "") +
        (n.selective === false ? `, not selective here (generic here, q ${pval(n.q_value)})` : n.selective ? `, selective here (q ${pval(n.q_value)})` : "") +
        (n.frequent ? `, frequent: active in ${pct(n.collection_rate)} of all images` : "") + (n.difference ? ", difference neuron" : "");
      const bar = h("span", { class: "bar", "aria-hidden": "true" },
        iv ? h("span", { class: "iv", style: `left:${iv[0] * 100}%;width:${Math.max(1, (iv[1] - iv[0]) * 100)}%` }) : "",
        h("span", { class: "sup", style: `left:calc(${n.support * 100}% - 1px)` }));
      const cls = [n.difference ? "diff" : "", n.selective ? "selective" : n.selective === false ? "generic" : "", n.reliable === false ? "unreliable" : ""];
      return h("li", {}, h("a", { href: route.neuron(job, layer.layer, n.channel), title: label, "aria-label": label,
        class: cls.filter(Boolean).join(" ") || null },
        h("span", { class: "ch" }, n.channel), bar, h("span", {}, fmt(n.support))));
    }));
  }
  function decision(t, yes, no) {
    if (!t) return "–";
    if (t.status !== "tested" || !t.result) return h("span", { class: "chip chip-untested" }, t.note);
    const r = t.result;
    return h("span", { class: "chip chip-" + (r.significant ? "yes" : "no") }, r.significant ? yes : no);
  }
  function pq(r) { return r ? `p ${pval(r.p_value)}` + (r.q_value !== null && r.q_value !== undefined ? `, q ${pval(r.q_value)}` : "") : "–"; }
  function testRow(name, nul, result, effect, detail) {
    return h("tr", {}, h("th", { scope: "row" }, name, nul ? h("p", { class: "null" }, "Null: ", nul) : ""),
      h("td", {}, result), h("td", {}, effect), h("td", {}, detail));
  }
  function evidenceTable(c) {
    const u = c.uncertainty;
    if (!u) return h("p", { class: "meta" }, "No uncertainty statistics in this result.");
    const nulls = c.nulls || {};
    const rows = [
      testRow("Group stability", null, fmt(u.group_stability), "", "Mean Jaccard of the group recomputed on bootstrap resamples of the concept's images (the clustering held fixed)."),
      testRow("Clustering stability", null, u.clustering_stability === null || u.clustering_stability === undefined ? "not computed" : fmt(u.clustering_stability), "",
        "Mean Jaccard of this concept with its best match when FINCH runs again on subsamples of the captions."),
    ];
    const s = u.specificity;
    const r = s && s.result;
    rows.push(testRow("Specificity (on held-out images)", nulls.specificity, decision(s, "specific", "not specific"),
      r ? `${signed(r.effect, 3)} [${interval(r.interval, 3)}]` : "",
      r ? [pq(r), h("div", { class: "meta" },
        `Group chosen again on ${r.selection_images} images (Jaccard ${fmt(r.selection_group_jaccard)} with the reported group); drop of ${r.test_images} held-out images ${fmt(r.test_drop, 3)} vs ${r.reference_images} other images ${fmt(r.reference_drop, 3)}.`,
        r.equally_active_drop !== null && r.equally_active_drop !== undefined ? ` Beyond activity: as many of the most active non-group neurons zeroed instead drop the held-out images by ${fmt(r.equally_active_drop, 3)}; per unit of activation removed, ${fmt(r.drop_per_activation, 4)} (group) vs ${fmt(r.equally_active_drop_per_activation, 4)}.` : "")] : ""));
    const k = r && r.keep_only;
    rows.push(testRow("Keep only the group", nulls.keep_only,
      k ? h("span", { class: "chip chip-" + (k.significant ? "yes" : "no") }, k.significant ? "significant" : "not significant") : decision(s),
      k ? `${signed(k.effect, 3)} [${interval(k.interval, 3)}]` : "", k ? pq(k) : ""));
    const d = u.difference_test;
    const dr = d && d.result;
    rows.push(testRow("Difference neurons (child vs siblings)", nulls.difference,
      d ? decision(d, "mark the child", "not significant") : h("span", { class: "chip chip-untested" }, "none: a top-level concept"),
      dr ? `${pct(dr.child_support)} vs ${pct(dr.sibling_support)}` : "",
      dr ? [pq(dr), h("div", { class: "meta" }, `Carried by ${pct(dr.child_carrier_share)} of its images vs ${pct(dr.sibling_carrier_share)} of its siblings'; ${dr.permutations} permutations.`)] : ""));
    const im = u.importance;
    const ir = im && im.result;
    rows.push(testRow("Importance vs random neurons", nulls.importance, decision(im, "important", "not significant"),
      ir ? `${signed(ir.effect, 3)} [${interval(ir.interval, 3)}]` : "",
      ir ? [pq(ir), h("div", { class: "meta" }, `Group drop ${fmt(ir.group_drop, 3)} vs ${ir.random_sets} random sets ${fmt(ir.random_drop_mean, 3)} on ${ir.images} images. It measures how much activity the group carries, not a concept.`)] : ""));
    return h("table", { class: "stats" }, h("thead", {}, h("tr", {}, ["Test", "Result", "Effect [interval]", "p, q and details"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows));
  }
  function modelUncertaintySection(c, job) {
    const u = c.uncertainty;
    if (!u) return null;
    const mu = u.model_uncertainty;
    if (!mu) return h("p", { class: "meta" }, "None of this concept's images were in the dropout passes' sample (or no passes ran), so it has no model-uncertainty split.");
    const mi = c.interpretation === "epistemic" ? "epistemic (the model's uncertainty)" : "sensitivity to feature dropout (not the model's own uncertainty: injected dropout, uncalibrated)";
    return [h("p", {}, `Mean predictive entropy over ${plural(mu.images, "sampled image")} of this concept: total ${fmt(mu.total, 4)} nats = expected entropy ${fmt(mu.expected_entropy, 4)}`
      + (c.interpretation === "epistemic" ? " (aleatoric)" : "") + ` + mutual information ${fmt(mu.mutual_information, 4)}, read as ${mi}.`), plot(c.plots.model_uncertainty, job)];
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
    setCrumbs([...base(job), ...c.path.map((p) => [p.label, route.concept(job, p.id)]), [c.label, null]]);
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
        h("li", {}, "label by ", c.label_source || "–")),
      h("div", { class: "chips-row" }, badges(c)),
      c.label_warning ? h("p", { class: "error" }, c.label_warning) : "",
      c.difference_description || c.difference_count ? h("p", { class: "apart" },
        h("b", {}, "What sets it apart" + (c.parent ? ` from “${c.parent.label}”` : "") + ": "),
        c.difference_description || "(no description)",
        ` — ${c.difference_count} difference neuron${c.difference_count === 1 ? "" : "s"}, marked Δ below.`) : "",
      h("h2", { id: "images" }, `Images (${count(images.total)}; ${first + 1}–${first + images.items.length} shown)`),
      pager(), grid(job, images.items, first, gen), images.pages > 1 ? pager() : "",
      h("h2", {}, "Evidence"), evidenceTable(c),
      h("h3", {}, "Model uncertainty"), modelUncertaintySection(c, job),
      h("h2", {}, `Neuron group (${c.neurons})`),
      c.plots && c.plots.support ? [plot(c.plots.support, job),
        h("p", { class: "legend" }, `Each neuron's support (dot: the share of this concept's images in which it is active) and its interval (line); filled green: selective here, hollow grey: not selective here (generic here); dashed line: min_support ${c.min_support}.`)] : "",
      h("p", { class: "legend" }, "Each cell links to the neuron's page: channel, a bar with the support (dark line) and its interval (blue), the support. Solid green frame: selective here (more active in this concept than in the rest of the images, q ≤ alpha). Dotted grey frame: not selective here (generic here: its rate is explained by its rate in the collection). Dashed frame: not reliable (the interval reaches below min_support); in a concept too small for any count to clear it, reliability is “too few images to tell”. Δ with an orange frame: a difference neuron (in this group, not the parent's)."),
      c.layers.length ? c.layers.map((l) => [h("h3", {}, `${l.layer} (${l.neurons.length}${l.channels ? ` of ${l.channels}` : ""})`), strip(job, l)]) : h("p", { class: "meta" }, "No neuron is common to this concept's images."),
      h("h2", {}, "Related concepts"), relatives(job, c));
    rendered("concept");
  }

  // --- a neuron ---
  async function neuronPage(gen, job, layer, ch) {
    const n = await data.neuron(job, layer, ch);
    if (gen !== generation) return;
    setCrumbs([...base(job), [`${layer} / ${ch}`, null]]);
    const rows = n.concepts.map((c) => h("tr", { class: c.difference ? "diff" : null, "data-concept": c.id },
      h("td", {}, h("a", { href: route.concept(job, c.id) }, c.label)), h("td", {}, c.level), h("td", {}, count(c.size)),
      h("td", {}, fmt(c.support)), h("td", {}, interval(c.interval)),
      h("td", {}, reliableText(c.reliable)), h("td", {}, selectiveText(c)), h("td", {}, c.difference ? "Δ yes" : "")));
    const rate = n.collection_rate;
    show(`Neuron ${layer}/${ch}`,
      h("h1", {}, `Neuron ${layer} / channel ${ch}`),
      h("ul", { class: "facts" },
        h("li", {}, "collection rate ", h("b", { "data-fact": "collection-rate" }, rate === null ? "–" : pct(rate)), " (the share of all images in which it is active)"),
        h("li", { "data-fact": "frequent" }, n.frequent === null ? "frequent: unknown" : n.frequent
          ? h("span", { class: "chip chip-no" }, `frequent: active in at least min_support (${n.min_support}) of all images, so it joins groups by its base rate`)
          : `not frequent (below min_support ${n.min_support} of all images)`),
        h("li", {}, h("b", {}, n.concepts.length), " concepts hold it; selective in ", h("b", {}, n.selective_in))),
      h("h2", {}, `Concepts whose group holds it (${n.concepts.length})`),
      n.plot ? [plot(n.plot, job), n.plot_rows < n.concepts.length ? h("p", { class: "meta" }, `The plot shows the first ${n.plot_rows} of ${n.concepts.length} concepts (highest level first); the table lists all.`) : ""] : "",
      n.concepts.length ? h("table", { class: "neuron-concepts" }, h("thead", {}, h("tr", {}, ["Concept", "Level", "Images", "Support", "Interval", "Reliable", "Selective here", "Difference"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows))
        : h("p", { class: "meta" }, "No concept's group holds this neuron."),
      h("h2", {}, `Most strongly activating images (${n.top_images.length})`),
      h("p", { class: "legend" }, `Its ${n.top_kept} most strongly activating images of the whole collection (pooled activation, from the stored activations; ${n.top_kept} are kept per neuron).`),
      n.top_images.length ? grid(job, n.top_images, 0, gen, (img) => `activation ${fmt(img.activation)}`) : h("p", { class: "meta" }, "No stored activations."));
    rendered("neuron");
  }

  // --- two siblings side by side ---
  async function comparePage(gen, job, a, b) {
    const [A, B] = await Promise.all([data.concept(job, a), data.concept(job, b)]);
    if (gen !== generation) return;
    setCrumbs([...base(job), [A.label, route.concept(job, a)], [`compared with ${B.label}`, null]]);
    const keys = (c) => new Map(c.layers.flatMap((l) => l.neurons.map((n) => [`${l.layer}/${n.channel}`, [l.layer, n.channel]])));
    const ka = keys(A), kb = keys(B);
    const chips = (entries, cls) => entries.length ? h("ul", { class: "chips " + (cls || "") }, entries.map(([k, [layer, ch]]) => h("li", {}, h("a", { href: route.neuron(job, layer, ch) }, k))))
      : h("p", { class: "meta" }, "None.");
    const shared = [...ka].filter(([k]) => kb.has(k));
    const column = (X, own, other) => h("section", { "aria-label": X.label },
      h("h2", {}, h("a", { href: route.concept(job, X.id) }, X.label)),
      h("p", { class: "meta" }, `level ${X.level} · ${count(X.size)} images · label quality ${fmt(X.label_quality)}`),
      h("div", { class: "chips-row" }, badges(X)),
      X.difference_description ? h("p", { class: "apart" }, X.difference_description) : "",
      h("h3", {}, `Only in this concept's group (${[...own].filter(([k]) => !other.has(k)).length})`),
      chips([...own].filter(([k]) => !other.has(k)), "apart-chips"),
      grid(job, X.images_page.items.slice(0, 8), 0, gen));
    show(`${A.label} vs ${B.label}`, h("h1", {}, "Two concepts side by side"),
      h("h2", {}, `Shared neurons (${shared.length})`), chips(shared),
      h("div", { class: "compare" }, column(A, ka, kb), column(B, kb, ka)));
    rendered("compare");
  }

  // --- a comparison of two models over the same images (issue 27; docs/comparison.md) ---
  // The tree is the result's (concepts come from captions, not from the model); each concept
  // carries one change marker, in words and a symbol as well as a colour.
  const MARK_SYMBOL = { changed: "◆", vanished: "✕", appeared: "✚", unchanged: "=", untested: "?", no_group: "–", in_both: "↔" };
  function marker(m) {
    return h("span", { class: `chip marker marker-${m.kind}`, title: m.title, "data-marker": m.kind },
      h("span", { "aria-hidden": "true" }, MARK_SYMBOL[m.kind] + " "), m.text);
  }
  const cmpBase = (id, title) => [...(MODE === "api" ? [["Jobs", route.home()]] : []), [title || "Comparison", route.comparison(id)]];
  function cmpNumbers(n) {
    const parts = [`A's group ${n.group_a} → B's group ${n.group_b}`];
    if (n.lost || n.gained) parts.push(`lost ${n.lost}, gained ${n.gained}`);
    if (n.jaccard !== null && n.jaccard !== undefined) parts.push(`Jaccard ${fmt(n.jaccard)}`);
    if (n.kept_share !== null && n.kept_share !== undefined) parts.push(`B keeps ${pct(n.kept_share)} of A's group`);
    return h("span", { class: "meta" }, parts.join(" · "));
  }
  function cmpRow(id, n) {
    const li = h("li", { "data-concept": n.id, "data-marker": n.marker.kind });
    const link = h("a", { href: route.cmpConcept(id, n.id), class: "concept-link" }, n.label);
    let toggle = h("span", { class: "toggle-space" });
    const below = n.changed_below ? h("span", { class: "meta changed-below" }, ` · ${plural(n.changed_below, "changed concept")} below`) : "";
    if (n.children) {
      toggle = h("button", { type: "button", class: "toggle", "aria-expanded": "false", "aria-label": `Show the ${n.children} concepts under “${n.label}”` }, "+");
      let sub = null;
      toggle.addEventListener("click", async () => {
        const open = toggle.getAttribute("aria-expanded") === "true";
        if (open) { sub.hidden = true; toggle.setAttribute("aria-expanded", "false"); toggle.textContent = "+"; return; }
        if (!sub) { sub = cmpTreeList(id, n.id, await data.cmpChildren(id, n.id)); li.append(sub); }
        sub.hidden = false; toggle.setAttribute("aria-expanded", "true"); toggle.textContent = "−";
      });
    }
    li.append(h("div", { class: "row" }, toggle, h("div", { class: "about" }, link, " ", marker(n.marker), " ", nodeFacts(n), below,
      n.label_b ? h("div", { class: "meta" }, `B's result words it “${n.label_b}”`) : "",
      h("div", {}, cmpNumbers(n)))));
    return li;
  }
  function cmpTreeList(id, parent, answer) {
    return h("ul", parent ? { role: "group" } : { class: "tree", "aria-label": "Concepts" }, answer.items.map((n) => cmpRow(id, n)));
  }
  function changedList(id, answer) {
    if (!answer.total) return h("p", { class: "meta" }, "No concept changed: every group is the same within same-model noise.");
    return h("ol", { class: "results changed-list", "aria-label": "Changed concepts" }, answer.items.map((n) => h("li", { "data-concept": n.id, "data-marker": n.marker.kind },
      h("a", { href: route.cmpConcept(id, n.id) }, n.label), " ", marker(n.marker), " ", nodeFacts(n), h("div", {}, cmpNumbers(n)),
      n.path.length ? h("div", { class: "meta" }, "in: ", n.path.map((p) => p.label).join(" › ")) : "")));
  }
  function modelCell(s, side) {
    const m = s.models[side];
    const name = MODE === "api" && m.job ? h("a", { href: route.tree(m.job) }, m.source) : h("code", {}, m.source);
    return h("td", {}, name, h("div", { class: "meta" }, `${m.architecture} · ${m.weights} · layers ${m.layers.join(", ")}`));
  }
  function testsList(tests) {
    return h("dl", { class: "tests" }, tests.map((t) => [h("dt", {}, t.name), h("dd", {}, h("span", { class: "null" }, t.text))]));
  }
  async function comparisonPage(gen, id) {
    const [s, top] = await Promise.all([data.cmpSummary(id), data.cmpChildren(id, null)]);
    if (gen !== generation) return;
    setCrumbs(cmpBase(id, s.title));
    const same = s.mode === "same_layers";
    const counts = h("ul", { class: "facts", "aria-label": "Concepts per change marker" },
      Object.entries(s.counts).filter(([, n]) => n).map(([kind, n]) => h("li", { "data-count": kind }, marker({ kind, ...s.markers[kind] }), " ", h("b", {}, count(n)))));
    const section = h("div", { id: "cmp-concepts" }, cmpTreeList(id, null, top));
    const changedTotal = s.counts.changed + s.counts.vanished + s.counts.appeared;
    const filter = h("button", { type: "button", id: "changed-only", "aria-pressed": "false", "aria-controls": "cmp-concepts" }, `Show only the changed concepts (${changedTotal})`);
    filter.addEventListener("click", async () => {
      const on = filter.getAttribute("aria-pressed") !== "true";
      filter.setAttribute("aria-pressed", on ? "true" : "false");
      filter.textContent = on ? "Show the whole tree" : `Show only the changed concepts (${changedTotal})`;
      section.replaceChildren(on ? changedList(id, await data.cmpChanged(id)) : cmpTreeList(id, null, await data.cmpChildren(id, null)));
    });
    const layerRows = s.layers.map((l) => h("tr", {}, h("th", { scope: "row" }, l.layer), h("td", {}, count(l.memberships_a)), h("td", {}, count(l.memberships_b)),
      h("td", {}, count(l.lost)), h("td", {}, count(l.gained)), h("td", {}, `${l.significant_down} down, ${l.significant_up} up`), h("td", {}, fmt(l.mean_jaccard))));
    show(s.title || "Comparison",
      h("h1", {}, "What changed between two models"),
      h("table", { class: "models" }, h("tbody", {},
        h("tr", {}, h("th", { scope: "row" }, "A, the reference"), modelCell(s, "a")),
        h("tr", {}, h("th", { scope: "row" }, "B, the candidate"), modelCell(s, "b")))),
      h("ul", { class: "facts" },
        h("li", {}, h("b", {}, count(s.images)), " images in both"),
        h("li", {}, h("b", {}, count(s.concepts)), " concepts"),
        h("li", {}, `${s.summary.significant_changes} of ${s.summary.tests} neuron supports changed beyond same-model noise (alpha ${s.alpha})`)),
      h("p", { class: "method" }, same ? "The same architecture and layers: a neuron is the same neuron in both models (by its index), so each concept shows the neurons B gained and lost. "
        : "Other layers or another architecture: no neuron is the same neuron in both models, so each concept shows the two models' numbers side by side. ", h("span", { class: "meta" }, `(Found: ${s.mode_reason}.)`)),
      counts,
      h("h2", { id: "concepts" }, "Concepts"),
      h("p", { class: "legend" }, "The concept tree of both results (the concepts come from the captions, so they are the same in both), top level first. Each concept's marker says what happened to its neuron group from A to B: ",
        Object.entries(s.markers).map(([kind, m], i) => [i ? "; " : "", h("b", {}, m.text), `: ${m.title}`]), "."),
      h("p", {}, filter), section,
      same && s.layers.length ? [h("h2", { id: "layers" }, "Per layer"), h("table", { class: "stats" },
        h("thead", {}, h("tr", {}, ["Layer", "Memberships in A", "In B", "Lost", "Gained", "Supports changed", "Mean Jaccard"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, layerRows))] : "",
      h("h2", { id: "tests" }, "The tests and their nulls"), testsList(s.tests));
    rendered("comparison");
  }
  function cmpCell(c, side, jobs, layer) {
    const tag = side === "a" ? (c.lost ? "lost" : "") : c.gained ? "gained" : "";
    const change = `support ${fmt(c.support)} in ${side.toUpperCase()}; change B − A ${signed(c.change)}, q ${pval(c.q)}` + (c.significant ? ", changed beyond same-model noise" : ", within same-model noise");
    const label = `${layer} channel ${c.channel}: ` + (tag === "lost" ? "lost (in A's group, not in B's), " : tag === "gained" ? "gained (in B's group, not in A's), " : "") + change;
    const body = [h("span", { class: "ch" }, c.channel), tag ? h("span", { class: "tag" }, tag) : "", h("span", {}, fmt(c.support)), c.significant ? h("span", { class: "sig" }, "q " + pval(c.q)) : ""];
    const cls = [tag, c.significant ? "significant" : ""].filter(Boolean).join(" ") || null;
    const job = jobs && jobs[side];
    return h("li", {}, MODE === "api" && job
      ? h("a", { href: route.neuron(job, layer, c.channel), class: cls, title: label, "aria-label": label, "data-channel": c.channel }, body)
      : h("span", { class: cls ? "cell " + cls : "cell", title: label, "aria-label": label, role: "img", "data-channel": c.channel }, body));
  }
  function causalText(c) {
    if (c.status !== "tested" || c.effect === null || c.effect === undefined) return h("span", { class: "chip chip-untested" }, c.note || "not tested");
    return [`${signed(c.effect, 3)} [${interval(c.interval, 3)}], q ${pval(c.q_value)} `,
      h("span", { class: "chip chip-" + (c.significant ? "yes" : "no") }, c.significant ? "specific" : "not specific")];
  }
  function sideTable(c) {
    const a = c.sides.a, b = c.sides.b;
    const diff = (x, y, d) => (x === null || x === undefined || y === null || y === undefined ? "–" : signed(y - x, d));
    const row = (name, what, x, y, change) => h("tr", {}, h("th", { scope: "row" }, name, h("p", { class: "null" }, what)), h("td", {}, x), h("td", {}, y), h("td", {}, change));
    return h("table", { class: "stats side-by-side" },
      h("thead", {}, h("tr", {}, ["", "A, the reference", "B, the candidate", "Change (B − A)"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {},
        row("Group size", "Neurons active in at least min_support of the concept's images.", count(a.group_size), count(b.group_size), diff(a.group_size, b.group_size, 0)),
        row("Selectivity", "Mean over the group of its support here minus its active rate in the rest of the images.", fmt(a.selectivity, 3), fmt(b.selectivity, 3), diff(a.selectivity, b.selectivity, 3)),
        row("Group stability", "Mean Jaccard of the group over bootstrap resamples of the concept's images.", fmt(a.group_stability), fmt(b.group_stability), diff(a.group_stability, b.group_stability, 2)),
        row("Causal effect", "Each model's specificity test: zeroing the group lowers the concept's held-out images' outputs more than other images' (effect in top-logit units).",
          causalText(a.causal), causalText(b.causal), c.causal_change === null || c.causal_change === undefined ? "–" : signed(c.causal_change, 3))));
  }
  function neuronTable(c) {
    const yes = (x) => (x ? "yes" : "no");
    const rows = c.neurons.map((n) => h("tr", { class: n.significant ? "significant" : null, "data-neuron": `${n.layer}/${n.channel}` },
      h("th", { scope: "row" }, `${n.layer} / ${n.channel}`),
      h("td", {}, yes(n.in_a), " → ", yes(n.in_b), n.in_a && !n.in_b ? h("span", { class: "tag tag-lost" }, " lost") : n.in_b && !n.in_a ? h("span", { class: "tag tag-gained" }, " gained") : ""),
      h("td", {}, `${fmt(n.support_a)} → ${fmt(n.support_b)} (${signed(n.support_change)})`),
      h("td", {}, `${n.a_only} / ${n.b_only}`),
      h("td", {}, pval(n.support_q)),
      h("td", {}, `${fmt(n.selectivity_a)} → ${fmt(n.selectivity_b)} (${signed(n.selectivity_change)})`),
      h("td", {}, pval(n.selectivity_q)),
      h("td", {}, n.significant ? h("b", {}, "changed") : "within noise")));
    return h("table", { class: "stats neuron-changes" },
      h("thead", {}, h("tr", {}, ["Neuron", "In the group (A → B)", "Support A → B (change)", "Images active only in A / only in B", "q (support)", "Selectivity A → B (change)", "q (selectivity)", "Verdict"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows));
  }
  async function cmpConceptPage(gen, id, cid) {
    const [s, c] = await Promise.all([data.cmpSummary(id), data.cmpConcept(id, cid)]);
    if (gen !== generation) return;
    setCrumbs([...cmpBase(id, s.title), ...c.path.map((p) => [p.label, route.cmpConcept(id, p.id)]), [c.label, null]]);
    const same = c.mode === "same_layers";
    const jobs = c.jobs || {};
    const own = MODE === "api" && jobs.a ? h("p", {}, "This concept in each model's own explorer: ",
      h("a", { href: route.concept(jobs.a, c.id) }, "model A"), jobs.b ? [", ", h("a", { href: route.concept(jobs.b, c.id) }, "model B")] : "", ".") : "";
    const layers = same ? c.layers.map((l) => h("section", { class: "cmp-layer", "data-layer": l.layer },
      h("h3", {}, `${l.layer}: A ${l.group_a}, B ${l.group_b} neurons; lost ${l.lost}, gained ${l.gained}; Jaccard ${fmt(l.jaccard)}; supports changed: ${l.significant_down} down, ${l.significant_up} up`),
      h("div", { class: "compare" },
        h("section", { "aria-label": `Model A's group in ${l.layer}` }, h("h4", {}, `Model A (reference): ${plural(l.a.length, "neuron")}`),
          l.a.length ? h("ul", { class: "strip cmp-strip" }, l.a.map((x) => cmpCell(x, "a", jobs, l.layer))) : h("p", { class: "meta" }, "No group in this layer.")),
        h("section", { "aria-label": `Model B's group in ${l.layer}` }, h("h4", {}, `Model B (candidate): ${plural(l.b.length, "neuron")}`),
          l.b.length ? h("ul", { class: "strip cmp-strip" }, l.b.map((x) => cmpCell(x, "b", jobs, l.layer))) : h("p", { class: "meta" }, "No group in this layer.")))))
      : h("table", { class: "stats" }, h("thead", {}, h("tr", {}, ["Model", "Layer", "Group size"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, c.layers.map((l) => h("tr", {}, h("td", {}, l.model.toUpperCase()), h("td", {}, l.layer), h("td", {}, count(l.group))))));
    show(c.label,
      h("h1", {}, c.label),
      c.label_b ? h("p", { class: "meta" }, `B's result words this concept “${c.label_b}” (the same images; labels are written per result).`) : "",
      h("div", { class: "chips-row" }, marker(c.marker)),
      h("ul", { class: "facts" },
        h("li", {}, h("span", { class: "badge" }, `level ${c.level}`)),
        h("li", {}, h("b", {}, count(c.size)), " images"),
        same ? h("li", {}, "Jaccard of the two groups ", h("b", { "data-fact": "jaccard" }, fmt(c.jaccard))) : "",
        same ? h("li", {}, "B keeps ", h("b", { "data-fact": "kept" }, pct(c.kept_share)), " of A's group") : "",
        same && c.testable === false ? h("li", {}, h("span", { class: "chip chip-untested" }, "too few images for any change to reach alpha")) : ""),
      own,
      h("h2", {}, "Both models side by side"), sideTable(c),
      h("h2", {}, same ? "Neuron groups by layer" : "Group sizes by layer"),
      same ? h("p", { class: "legend" }, `Each cell: channel, its support in that model (the share of the concept's images in which it is active). `,
        h("b", {}, "lost"), " (red frame, in A's column): in A's group, not in B's. ", h("b", {}, "gained"), " (blue frame, in B's column): in B's group, not in A's. ",
        "Gained and lost are the group rule's verdict; a cell whose support changed beyond same-model noise also shows its q (thick frame). The table below has every tested neuron.")
        : h("p", { class: "legend" }, "The two models read other layers (or are other architectures): no neuron is the same neuron in both, so only the numbers are side by side, without gained or lost neurons."),
      layers,
      same ? [h("h2", {}, `Every tested neuron (${c.neurons.length})`),
        h("p", { class: "legend" }, "Tested: both groups, and every neuron whose support averaged over the two models is at least min_support / 2. Changed beyond same-model noise first."),
        c.neurons.length ? neuronTable(c) : h("p", { class: "meta" }, "None.")] : "",
      h("h2", {}, "The tests and their nulls"), testsList(c.tests),
      h("h2", {}, "Related concepts"),
      h("div", { class: "relatives" },
        h("section", {}, h("h3", {}, "Parent"), c.parent ? h("ul", {}, h("li", {}, h("a", { href: route.cmpConcept(id, c.parent.id) }, c.parent.label))) : h("p", { class: "meta" }, "None: a top-level concept.")),
        h("section", {}, h("h3", {}, `Children (${c.children})`), c.children ? h("ul", {}, c.children_links.map((r) => h("li", {}, h("a", { href: route.cmpConcept(id, r.id) }, r.label)))) : h("p", { class: "meta" }, "None: a finest-level concept."))));
    rendered("comparison-concept");
  }

  // --- routing ---
  let routeStart = 0;
  async function dispatch() {
    const gen = ++generation;
    routeStart = timings.length ? performance.now() : 0;
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
    if (observer) { observer.disconnect(); observer = null; }
    queue.length = 0;
    blobUrls.forEach((u) => URL.revokeObjectURL(u));
    blobUrls = [];
    delete document.body.dataset.rendered;
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
    if (MODE === "api" && api.key() === null) return keyForm();
    try {
      if (parts[0] === "comparison") await (parts[2] === "concept" ? cmpConceptPage(gen, parts[1], parts[3]) : comparisonPage(gen, parts[1]));
      else if (parts[0] !== "job") await (MODE === "api" ? jobsPage(gen) : VIEW === "comparison" ? comparisonPage(gen, "report") : overviewPage(gen, "report"));
      else if (parts.length === 2) await overviewPage(gen, parts[1]);
      else if (parts[2] === "concept") await conceptPage(gen, parts[1], parts[3], parts[4] === "page" ? Math.max(0, Number(parts[5]) - 1) : 0);
      else if (parts[2] === "neuron") await neuronPage(gen, parts[1], parts[3], Number(parts[4]));
      else if (parts[2] === "compare") await comparePage(gen, parts[1], parts[3], parts[4]);
      else await overviewPage(gen, parts[1]);
      if (gen === generation && timings.length > 1) focusHeading();
    } catch (err) {
      if (gen === generation) fail(err);
    }
  }
  window.addEventListener("hashchange", dispatch);
  dispatch();
})();
