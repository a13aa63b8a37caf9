"""Contacts: CSV files, phone numbers, lists, and the effects the platform's answers have on a contact."""
