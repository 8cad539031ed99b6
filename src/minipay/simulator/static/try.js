// The simulator's progressive enhancement: every page works without it (forms and links).
// With it: the pay sheet hands wx.requestPayment's answer back to the mini program, the result
// page asks the shop backend until the payment is final, and the wire panel refreshes itself.
// Fragments come from the server already escaped; nothing here builds HTML from data.
(function () {
  "use strict";

  // wx.requestPayment's answer, posted by the sandbox's pay sheet (another origin: the sandbox).
  var frame = document.querySelector("iframe.sheet-frame");
  if (frame) {
    window.addEventListener("message", function (event) {
      var data = event.data;
      if (event.origin !== frame.dataset.origin || !data || data.source !== "minipay-cashier") return;
      if (typeof data.errMsg !== "string") return;
      window.location.assign(frame.dataset.result + "?errMsg=" + encodeURIComponent(data.errMsg));
    });
  }

  function fetchFragment(url) {
    return fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.text();
    });
  }

  // The result page: ask the backend until the payment is final (a cancelled payment stays open:
  // stop after a while, the page says so and offers "Check again").
  var status = document.getElementById("status");
  if (status && status.dataset.polling === "yes") {
    var asked = 0;
    var ask = function () {
      asked += 1;
      // Every third time the backend asks WeChat itself (GET /v1/payments/{id}?sync=true).
      var sync = status.dataset.front === "requestPayment:ok" && asked % 3 === 0 ? "?sync=true" : "";
      fetchFragment(status.dataset.statusUrl + sync).then(function (html) {
        status.innerHTML = html;
        var card = status.querySelector(".status-card");
        if (card && card.dataset.final === "yes") return;
        if (asked < 20) window.setTimeout(ask, 1000);
      }).catch(function () {
        if (asked < 20) window.setTimeout(ask, 2000);
      });
    };
    window.setTimeout(ask, 800);
  }

  // The wire panel: poll its list, keep what the reader opened open.
  var wire = document.getElementById("wire-list");
  if (wire) {
    var last = null;
    var refresh = function () {
      fetchFragment(wire.dataset.url).then(function (html) {
        if (html !== last) {
          var open = {};
          wire.querySelectorAll("li[data-key] details[open]").forEach(function (d) {
            open[d.parentElement.dataset.key] = true;
          });
          wire.innerHTML = html;
          wire.querySelectorAll("li[data-key]").forEach(function (li) {
            if (open[li.dataset.key]) li.querySelector("details").open = true;
          });
          last = html;
        }
      }).catch(function () {}).then(function () {
        window.setTimeout(refresh, 1500);
      });
    };
    window.setTimeout(refresh, 1500);
  }
})();
