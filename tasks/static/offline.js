/* corpusmill: the little of jQuery and bootstrap-table that Great Expectations' Data Docs
   call, so tables built from inline data (the index page's list of validations) render
   offline, without the CDN scripts. Sorting, paging and filters are left out. */
(function () {
  function render(table, options) {
    var columns = (options.columns || []).filter(function (c) { return c.field; });
    var html = "<thead><tr>" + columns.map(function (c) { return "<th>" + (c.title || c.field) + "</th>"; }).join("") +
      "</tr></thead><tbody>";
    (options.data || []).forEach(function (row) {
      var link = row._table_row_link_path;
      html += "<tr" + (link ? ' data-href="' + link + '" onclick="window.location=this.dataset.href"' : "") + ">" +
        columns.map(function (c) { var v = row[c.field]; return "<td>" + (v === undefined ? "" : v) + "</td>"; }).join("") +
        "</tr>";
    });
    table.innerHTML = html + "</tbody>";
  }
  function wrap(nodes) {
    return {
      bootstrapTable: function (options) {
        if (typeof options === "object") nodes.forEach(function (n) { render(n, options); });
        return this;
      },
      on: function () { return this; },
      ready: function (fn) { document.readyState === "loading" ? document.addEventListener("DOMContentLoaded", fn) : fn(); return this; },
      each: function () { return this; }, css: function () { return this; }, click: function () { return this; },
      collapse: function () { return this; }, tooltip: function () { return this; }, popover: function () { return this; },
    };
  }
  window.jQuery = window.$ = function (arg) {
    if (typeof arg === "function") return wrap([]).ready(arg);
    if (arg === document || arg === window) return wrap([]);
    try { return wrap(Array.prototype.slice.call(document.querySelectorAll(arg))); } catch (e) { return wrap([]); }
  };
})();
