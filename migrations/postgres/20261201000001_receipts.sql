-- The signed decision receipt (compact JWS) of each verdict, so that GET by reference returns the
-- same receipt as the POST did. NULL for rows written before receipts existed. Keep identical to
-- ../sqlite.
ALTER TABLE audit ADD COLUMN receipt TEXT;
