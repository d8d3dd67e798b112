-- lending_library.sql - schema, sample data and reporting queries for a small lending library.
--
-- Written for SQLite 3.35+ (window functions, RETURNING, STRICT tables) but uses mostly standard
-- SQL. Run it end to end with:
--
--     sqlite3 :memory: < lending_library.sql
--
-- Design notes:
--   * A "title" is the abstract book; a "copy" is a physical item with a barcode. Loans point at
--     copies, holds (reservations) point at titles.
--   * A copy can be on loan at most once at a time: the partial unique index on loans enforces it
--     in the database rather than trusting application code.
--   * Fines are derived from dates, never stored, so they cannot drift out of sync.

PRAGMA foreign_keys = ON;

CREATE TABLE authors (
    author_id   INTEGER PRIMARY KEY,
    full_name   TEXT NOT NULL,
    born_year   INTEGER CHECK (born_year BETWEEN 1000 AND 2100)
) STRICT;

CREATE TABLE titles (
    title_id    INTEGER PRIMARY KEY,
    isbn13      TEXT UNIQUE CHECK (length(isbn13) = 13),
    name        TEXT NOT NULL,
    published   INTEGER,
    subject     TEXT NOT NULL DEFAULT 'general'
) STRICT;

CREATE TABLE title_authors (
    title_id    INTEGER NOT NULL REFERENCES titles(title_id) ON DELETE CASCADE,
    author_id   INTEGER NOT NULL REFERENCES authors(author_id),
    position    INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (title_id, author_id)
) STRICT;

CREATE TABLE copies (
    copy_id     INTEGER PRIMARY KEY,
    title_id    INTEGER NOT NULL REFERENCES titles(title_id),
    barcode     TEXT NOT NULL UNIQUE,
    acquired    TEXT NOT NULL,               -- ISO date
    withdrawn   TEXT                         -- NULL while in circulation
) STRICT;

CREATE TABLE members (
    member_id   INTEGER PRIMARY KEY,
    full_name   TEXT NOT NULL,
    email       TEXT UNIQUE,
    joined      TEXT NOT NULL,
    max_loans   INTEGER NOT NULL DEFAULT 5 CHECK (max_loans >= 0)
) STRICT;

CREATE TABLE loans (
    loan_id     INTEGER PRIMARY KEY,
    copy_id     INTEGER NOT NULL REFERENCES copies(copy_id),
    member_id   INTEGER NOT NULL REFERENCES members(member_id),
    borrowed    TEXT NOT NULL,
    due         TEXT NOT NULL,
    returned    TEXT,
    CHECK (due > borrowed),
    CHECK (returned IS NULL OR returned >= borrowed)
) STRICT;

-- At most one open loan per copy.
CREATE UNIQUE INDEX one_open_loan_per_copy ON loans(copy_id) WHERE returned IS NULL;
CREATE INDEX loans_by_member ON loans(member_id, returned);

CREATE TABLE holds (
    hold_id     INTEGER PRIMARY KEY,
    title_id    INTEGER NOT NULL REFERENCES titles(title_id),
    member_id   INTEGER NOT NULL REFERENCES members(member_id),
    placed      TEXT NOT NULL,
    fulfilled   TEXT,
    UNIQUE (title_id, member_id, placed)
) STRICT;

-- Refuse a new loan when the member already has max_loans open loans.
CREATE TRIGGER loans_respect_limit
BEFORE INSERT ON loans
WHEN (SELECT count(*) FROM loans WHERE member_id = NEW.member_id AND returned IS NULL)
     >= (SELECT max_loans FROM members WHERE member_id = NEW.member_id)
BEGIN
    SELECT RAISE(ABORT, 'member has reached their loan limit');
END;

-- A convenience view: every copy with its current status.
CREATE VIEW copy_status AS
SELECT c.copy_id,
       c.barcode,
       t.name AS title,
       CASE
           WHEN c.withdrawn IS NOT NULL THEN 'withdrawn'
           WHEN l.loan_id IS NOT NULL THEN 'on loan'
           ELSE 'available'
       END AS status,
       l.due
FROM copies c
JOIN titles t USING (title_id)
LEFT JOIN loans l ON l.copy_id = c.copy_id AND l.returned IS NULL;

-- ---- sample data ------------------------------------------------------------------------------

INSERT INTO authors (author_id, full_name, born_year) VALUES
    (1, 'Ada Quill', 1961), (2, 'Bruno Farrow', 1974), (3, 'Chidi Okafor', 1988),
    (4, 'Dana Lindqvist', 1979);

INSERT INTO titles (title_id, isbn13, name, published, subject) VALUES
    (1, '9780000000011', 'Practical Parsing', 2011, 'computing'),
    (2, '9780000000028', 'Gardens of the North', 2004, 'botany'),
    (3, '9780000000035', 'Numerical Recipes for Rivers', 2019, 'hydrology'),
    (4, '9780000000042', 'The Quiet Compiler', 2022, 'computing'),
    (5, '9780000000059', 'Lichens and Mosses', 1998, 'botany');

INSERT INTO title_authors (title_id, author_id, position) VALUES
    (1, 1, 1), (1, 3, 2), (2, 4, 1), (3, 2, 1), (4, 1, 1), (5, 4, 1);

INSERT INTO copies (copy_id, title_id, barcode, acquired, withdrawn) VALUES
    (1, 1, 'LIB-0001', '2015-03-01', NULL), (2, 1, 'LIB-0002', '2015-03-01', NULL),
    (3, 2, 'LIB-0003', '2010-06-12', NULL), (4, 3, 'LIB-0004', '2020-01-20', NULL),
    (5, 4, 'LIB-0005', '2023-02-02', NULL), (6, 5, 'LIB-0006', '2001-09-09', '2021-05-01'),
    (7, 4, 'LIB-0007', '2023-02-02', NULL);

INSERT INTO members (member_id, full_name, email, joined, max_loans) VALUES
    (1, 'Eli Novak', 'eli@example.org', '2019-01-15', 5),
    (2, 'Fatima Hassan', 'fatima@example.org', '2021-07-01', 2),
    (3, 'Gus Moreau', NULL, '2023-11-30', 3);

INSERT INTO loans (copy_id, member_id, borrowed, due, returned) VALUES
    (1, 1, '2024-01-02', '2024-01-23', '2024-01-20'),
    (3, 1, '2024-01-02', '2024-01-23', '2024-02-05'),
    (5, 2, '2024-02-10', '2024-03-02', NULL),
    (4, 2, '2024-02-11', '2024-03-03', '2024-03-01'),
    (2, 3, '2024-02-20', '2024-03-12', NULL),
    (7, 1, '2024-03-01', '2024-03-22', NULL),
    (1, 2, '2024-03-02', '2024-03-23', NULL);

INSERT INTO holds (title_id, member_id, placed, fulfilled) VALUES
    (4, 3, '2024-02-12', NULL), (4, 1, '2024-02-15', '2024-03-01'), (1, 1, '2024-03-05', NULL);

-- ---- reports ----------------------------------------------------------------------------------
.headers on
.mode column

-- 1. Overdue loans as of a reporting date, with the fine (0.25 per day, capped at 10.00).
SELECT m.full_name,
       cs.title,
       l.due,
       CAST(julianday('2024-03-25') - julianday(l.due) AS INTEGER) AS days_late,
       printf('%.2f', min(10.0, 0.25 * (julianday('2024-03-25') - julianday(l.due)))) AS fine
FROM loans l
JOIN members m USING (member_id)
JOIN copy_status cs ON cs.copy_id = l.copy_id
WHERE l.returned IS NULL AND l.due < '2024-03-25'
ORDER BY days_late DESC;

-- 2. Circulation per subject, and each title's share of its subject's loans.
SELECT t.subject,
       t.name,
       count(l.loan_id) AS loans,
       round(100.0 * count(l.loan_id) / sum(count(l.loan_id)) OVER (PARTITION BY t.subject), 1) AS pct_of_subject
FROM titles t
LEFT JOIN copies c USING (title_id)
LEFT JOIN loans l USING (copy_id)
GROUP BY t.title_id
ORDER BY t.subject, loans DESC, t.name;

-- 3. Hold queue: open holds ranked by placement date per title, with available copies.
SELECT t.name,
       m.full_name,
       h.placed,
       row_number() OVER (PARTITION BY h.title_id ORDER BY h.placed) AS queue_position,
       (SELECT count(*) FROM copy_status cs WHERE cs.title = t.name AND cs.status = 'available') AS available
FROM holds h
JOIN titles t USING (title_id)
JOIN members m USING (member_id)
WHERE h.fulfilled IS NULL
ORDER BY t.name, queue_position;

-- 4. Members' borrowing history: running count of loans and the gap between consecutive loans.
SELECT m.full_name,
       l.borrowed,
       count(*) OVER (PARTITION BY l.member_id ORDER BY l.borrowed, l.loan_id) AS running_loans,
       CAST(julianday(l.borrowed) - julianday(lag(l.borrowed) OVER (PARTITION BY l.member_id
                                                                    ORDER BY l.borrowed, l.loan_id))
            AS INTEGER) AS days_since_previous
FROM loans l
JOIN members m USING (member_id)
ORDER BY m.full_name, l.borrowed;

-- 5. Authors with their titles as one string, most prolific first.
SELECT a.full_name,
       count(*) AS n_titles,
       group_concat(t.name, '; ') AS titles
FROM authors a
JOIN title_authors ta USING (author_id)
JOIN titles t USING (title_id)
GROUP BY a.author_id
ORDER BY n_titles DESC, a.full_name;

-- 6. The constraints at work: each statement below must fail. SQLite keeps going after an error
--    when run from a script, so the failures show up as messages and the data stays unchanged.
INSERT INTO loans (copy_id, member_id, borrowed, due) VALUES (5, 1, '2024-03-05', '2024-03-26');
INSERT INTO loans (copy_id, member_id, borrowed, due) VALUES (3, 2, '2024-03-05', '2024-03-26');
INSERT INTO loans (copy_id, member_id, borrowed, due) VALUES (3, 1, '2024-03-05', '2024-03-01');

SELECT status, count(*) AS copies FROM copy_status GROUP BY status ORDER BY status;
