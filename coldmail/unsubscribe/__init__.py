"""One-click unsubscribe (RFC 8058): signed links naming an email, and the page behind them."""
