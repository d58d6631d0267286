/* phip console: draws the charts from the page's JSON (#chart-data's data-chart) when ECharts is loaded, and opens a
   session from a token in the login URL's fragment (#token=…, as printed by `phip demo`).  Without this
   file or without ECharts the pages still work: the numbers are in the tables. */
(function () {
  "use strict";
  var charts = [];

  function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(2) + "%"; }

  function dimensionChart(el, data) {
    var thr = data.threshold;
    var dims = data.dimensions.filter(function (d) { return d.rate !== null && d.rate !== undefined; });
    var low = Math.min.apply(null, dims.map(function (d) { return d.rate; }).concat([thr]));
    var floor = Math.max(0, Math.floor((low - 0.02) * 20) / 20);
    return {
      grid: { left: 56, right: 96, top: 24, bottom: 40 },
      tooltip: { trigger: "axis", valueFormatter: pct },
      xAxis: { type: "category", data: dims.map(function (d) { return d.label + "\n" + d.key; }),
               axisLabel: { interval: 0, fontSize: 11 } },
      yAxis: { type: "value", min: floor, max: 1, interval: (1 - floor) / 5, axisLabel: { formatter: function (v) { return Math.round(v * 100) + "%"; } } },
      series: [{
        type: "bar", barMaxWidth: 48,
        data: dims.map(function (d) {
          return { value: d.rate, itemStyle: { color: d.rate < thr ? "#c0392b" : "#2e7d4f" } };
        }),
        label: { show: true, position: "top", formatter: function (p) { return pct(p.value); }, fontSize: 11 },
        markLine: { symbol: "none", lineStyle: { color: "#b7791f", type: "dashed" },
                    label: { formatter: "达标线\n" + pct(thr), position: "end" },
                    data: [{ yAxis: thr }] }
      }]
    };
  }

  function trendChart(el, data) {
    var days = data.trend.map(function (d) { return d.day; });
    var keys = ["completeness", "conformance", "consistency", "timeliness", "uniqueness"];
    var series = keys.map(function (k) {
      return { name: data.labels[k], type: "line", showSymbol: days.length < 40, yAxisIndex: 0,
               tooltip: { valueFormatter: pct },
               data: data.trend.map(function (d) { return [d.day, d.rates[k]]; }) };
    });
    series.push({ name: "接收量", type: "bar", yAxisIndex: 1, itemStyle: { color: "#c9d6e3" },
                  data: data.trend.map(function (d) { return [d.day, d.received]; }), z: 0 });
    series[0].markLine = { symbol: "none", silent: true, lineStyle: { color: "#b7791f", type: "dashed" },
                           label: { show: false },
                           data: [{ yAxis: data.threshold }] };
    return {
      grid: { left: 56, right: 64, top: 40, bottom: 56 },
      legend: { top: 0, left: 0, right: 80, type: "scroll" },
      tooltip: { trigger: "axis" },
      // a long range opens on its last 90 days; the slider shows the rest
      dataZoom: days.length > 90 ? [{ type: "slider", height: 18, bottom: 6, startValue: days[days.length - 90] },
                                    { type: "inside", startValue: days[days.length - 90] }] : [],
      // a time axis: days without uploads keep their place
      xAxis: { type: "time" },
      yAxis: [{ type: "value", max: 1, scale: true, axisLabel: { formatter: function (v) { return Math.round(v * 100) + "%"; } } },
              { type: "value", name: "接收量", splitLine: { show: false } }],
      series: series
    };
  }

  function draw() {
    charts.forEach(function (c) { c.dispose(); });
    charts = [];
    var holder = document.getElementById("chart-data");
    if (!holder || typeof window.echarts === "undefined") { return; }
    var data = JSON.parse(holder.getAttribute("data-chart"));
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var kind = el.getAttribute("data-chart");
      if (kind === "trend" && !data.trend.length) { return; }
      el.innerHTML = "";
      var chart = window.echarts.init(el);
      chart.setOption(kind === "trend" ? trendChart(el, data) : dimensionChart(el, data));
      charts.push(chart);
    });
  }

  function tokenFromFragment() {
    var m = /^#token=([^&]+)/.exec(window.location.hash || "");
    var form = document.getElementById("token-form");
    if (!m || !form) { return; }
    history.replaceState(null, "", window.location.pathname + window.location.search);
    form.querySelector("textarea[name=token]").value = decodeURIComponent(m[1]);
    form.submit();
  }

  document.addEventListener("DOMContentLoaded", function () { tokenFromFragment(); draw(); });
  document.addEventListener("htmx:afterSettle", draw);
  window.addEventListener("resize", function () { charts.forEach(function (c) { c.resize(); }); });
})();
