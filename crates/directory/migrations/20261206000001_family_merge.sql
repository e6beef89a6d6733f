-- Family merges: a family merged into another keeps its row (and its revoked memberships)
-- for the record, pointing at the family that absorbed it. Portable SQL.
ALTER TABLE families ADD COLUMN merged_into TEXT;
