// The receipt page's scan field: a scanned or typed kit number (a scanner ends with Enter)
// fills that kit's row with the condition chosen for scanned kits. Without JavaScript the
// "Fill the row" button asks the server to do the same (iwrs/web/supply.py, receive).
(function () {
  "use strict";
  var form = document.getElementById("receipt");
  var scan = document.getElementById("scan");
  var status = document.getElementById("scan-status");
  if (!form || !scan || !status) { return; }

  function fill(event) {
    event.preventDefault();
    var number = scan.value.trim();
    if (!number) { status.textContent = "Scan or type a kit number first."; return; }
    var chosen = form.querySelector('input[name="scan_condition"]:checked');
    if (!chosen) { status.textContent = "Choose the condition of scanned kits first."; return; }
    var row = document.getElementById("row-" + number);
    if (!row || row.getAttribute("data-kit") !== number) {
      status.textContent = "Kit " + number + " is not in this shipment.";
      scan.select();
      return;
    }
    var radio = row.querySelector('input[type="radio"][value="' + chosen.value + '"]');
    radio.checked = true;
    row.classList.add("scanned");
    status.textContent = "Kit " + number + ": " + chosen.value + ".";
    scan.value = "";
    scan.focus();
  }

  document.getElementById("scan-fill").addEventListener("click", fill);
  scan.addEventListener("keydown", function (event) {
    if (event.key === "Enter") { fill(event); }
  });
}());
