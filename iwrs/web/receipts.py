"""Printable receipts (iwrs/services/receipts.py): one page per act with a print style, and the
same receipt as a PDF (`?format=pdf`) drawn by WeasyPrint.

Decision: WeasyPrint is imported only when a PDF is asked for (the `pdf` extra of
pyproject.toml; it needs the system's Pango library). Without either, the application starts
and every receipt page works (the browser prints it with the print style); a PDF request
answers 503 with rule `pdf_unavailable` and says to print the page instead. Access is the
service's, checked before anything is drawn.
Decision: the treatment an unblinding investigator sees on the unblinding receipt is never on
paper (left out of the PDF, hidden by the print style): a printed page travels among blinded site
staff. So the PDF is the same for every reader whatever the arm.
Adding a receipt of another act (a kit return) is one route here, see the service's docstring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, render_template, request
from flask_login import current_user, login_required

from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import IWRSError
from iwrs.services import receipts
from iwrs.services.receipts import Receipt

bp = Blueprint("receipts", __name__, url_prefix="/receipts")
_STYLE = Path(__file__).parent / "static" / "receipt.css"


class PdfUnavailable(IWRSError):
    """No PDF library in this installation (the receipt page prints from the browser)."""

    status = 503
    title = "PDF not available"


def _pdf_asked() -> bool:
    return request.args.get("format") == "pdf"


def _answer(receipt: Receipt) -> Any:
    """The receipt as its page, or as a PDF when `?format=pdf`."""
    if not _pdf_asked():
        return render_template("receipts/receipt.html", receipt=receipt)
    return Response(
        pdf_of(receipt),
        mimetype="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{_file_name(receipt)}"'},
    )


def _file_name(receipt: Receipt) -> str:
    return f"{receipt.study_id}-{receipt.kind}-receipt-{receipt.proof.event_seq}.pdf"


def pdf_of(receipt: Receipt) -> bytes:
    """The receipt drawn as a PDF by WeasyPrint (PdfUnavailable when it is not installed)."""
    try:
        import weasyprint  # lazy: the PDF is optional (pyproject extra `pdf`)
    except (ImportError, OSError):  # pragma: no cover - not installed, or no Pango library
        raise PdfUnavailable(
            "PDF receipts need WeasyPrint, which this installation lacks; print this page "
            "from the browser instead (its print style makes the same receipt).",
            field="format",
            rule="pdf_unavailable",
        ) from None
    html = render_template("receipts/receipt_pdf.html", receipt=receipt, on_paper=True)
    document = weasyprint.HTML(string=html, base_url=request.url_root)
    return bytes(document.write_pdf(stylesheets=[weasyprint.CSS(filename=str(_STYLE))]))


@bp.get("/randomization/<int:subject_id>")
@requires(Permission.SCREEN_SUBJECTS)
def randomization(subject_id: int):  # type: ignore[no-untyped-def]
    return _answer(receipts.randomization_receipt(actor=_actor(), subject_id=subject_id))


@bp.get("/dispensation/<int:dispensation_id>")
@login_required  # the site's pharmacists and investigators: the service checks which
def dispensation(dispensation_id: int):  # type: ignore[no-untyped-def]
    return _answer(receipts.dispensation_receipt(actor=_actor(), dispensation_id=dispensation_id))


@bp.get("/shipment/<int:shipment_id>")
@requires(Permission.VIEW_SUPPLY)
def shipment(shipment_id: int):  # type: ignore[no-untyped-def]
    return _answer(receipts.shipment_receipt(actor=_actor(), shipment_id=shipment_id))


@bp.get("/unblinding/<int:subject_id>")
@requires(Permission.VIEW_UNBLINDING_REPORT)
def unblinding(subject_id: int):  # type: ignore[no-untyped-def]
    # Only the page shows the arm, so only the page reads it (and records the view).
    return _answer(
        receipts.unblinding_receipt(
            actor=_actor(), subject_id=subject_id, with_arm=not _pdf_asked()
        )
    )


def _actor() -> Actor:
    return Actor.of(current_user)
