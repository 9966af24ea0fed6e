#!/bin/sh
# CGI for the busybox-httpd test image: says how busybox httpd passed the request on.
len=$(head -c "${CONTENT_LENGTH:-0}" | wc -c)
printf 'Content-Type: text/plain\r\n\r\n'
echo "method=$REQUEST_METHOD"
echo "query=$QUERY_STRING"
echo "body_len=$len"
