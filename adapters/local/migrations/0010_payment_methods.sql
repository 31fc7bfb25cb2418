-- The payment method a subscriber saved (Stripe Checkout in setup mode): invoices of a
-- customer with one are charged to it, the others are sent to be paid.
ALTER TABLE payment_customers ADD COLUMN payment_method TEXT;
