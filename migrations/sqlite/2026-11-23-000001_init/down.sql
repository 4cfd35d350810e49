DROP TABLE messages;
DROP TABLE members;
DROP TABLE conversations;
DROP TABLE refresh_tokens;
DROP TABLE users;
