"""Rows -> Klaviyo profiles: e-mail, phone numbers, typed values; a row or a block at a time."""
