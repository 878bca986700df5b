"""The static web page (HTML, JS, CSS shipped in the package; no CDN)."""
