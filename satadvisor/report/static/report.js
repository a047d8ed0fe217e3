/* satadvisor report: draws the charts embedded as JSON and wires the copy buttons. No network. */
(function () {
  "use strict";

  var config = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["lasso2d", "select2d"],
    toImageButtonOptions: { format: "png", scale: 2 }
  };

  function drawAll() {
    var plots = document.querySelectorAll("[data-figure]");
    Array.prototype.forEach.call(plots, function (el) {
      if (typeof window.Plotly === "undefined") {
        el.classList.add("plot-missing");
        el.textContent = "Chart not drawn: plotly.min.js was not found next to this page. " +
          "Keep the report folder together (index.html and plotly.min.js).";
        return;
      }
      var source = document.getElementById(el.getAttribute("data-figure"));
      try {
        var fig = JSON.parse(source.textContent);
        window.Plotly.newPlot(el, fig.data, fig.layout, config).catch(function (err) {
          console.error("satadvisor report: chart " + el.id + " failed: " + err);
        });
      } catch (err) {
        console.error("satadvisor report: chart " + el.id + " failed: " + err);
      }
    });
  }

  function selectText(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function wireCopyButtons() {
    var buttons = document.querySelectorAll("button[data-copy]");
    Array.prototype.forEach.call(buttons, function (button) {
      button.addEventListener("click", function () {
        var code = button.parentElement.querySelector("code");
        var done = function () {
          button.textContent = "copied";
          window.setTimeout(function () { button.textContent = "copy"; }, 1500);
        };
        var fallback = function () {
          selectText(code);
          try { document.execCommand("copy"); } catch (e) { /* text stays selected */ }
          done();
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(code.textContent).then(done, fallback);
        } else {
          fallback();
        }
      });
    });
  }

  drawAll();
  wireCopyButtons();
})();
