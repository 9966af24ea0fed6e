// Status reasons, the Date format and response serialization.
#include "http/response.h"

#include <charconv>
#include <ctime>

namespace sp::http {

const char* reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default: return "Unknown";
  }
}

void format_http_date(int64_t unix_seconds, char out[29]) {
  static const char kDays[] = "SunMonTueWedThuFriSat";
  static const char kMonths[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
  time_t t = static_cast<time_t>(unix_seconds);
  tm g{};
  gmtime_r(&t, &g);
  auto two = [](char* p, int v) {
    p[0] = static_cast<char>('0' + v / 10);
    p[1] = static_cast<char>('0' + v % 10);
  };
  char* p = out;
  for (int i = 0; i < 3; ++i) *p++ = kDays[g.tm_wday * 3 + i];
  *p++ = ',';
  *p++ = ' ';
  two(p, g.tm_mday);
  p += 2;
  *p++ = ' ';
  for (int i = 0; i < 3; ++i) *p++ = kMonths[g.tm_mon * 3 + i];
  *p++ = ' ';
  int year = g.tm_year + 1900;
  two(p, year / 100);
  two(p + 2, year % 100);
  p += 4;
  *p++ = ' ';
  two(p, g.tm_hour);
  p[2] = ':';
  two(p + 3, g.tm_min);
  p[5] = ':';
  two(p + 6, g.tm_sec);
  p += 8;
  std::string_view gmt = " GMT";
  for (char c : gmt) *p++ = c;
}

void append_response(std::string& out, const ResponseHead& head, std::string_view body, std::string_view date) {
  char num[24];
  out += "HTTP/1.1 ";
  auto r = std::to_chars(num, num + sizeof num, head.status);
  out.append(num, r.ptr);
  out += ' ';
  out += reason_phrase(head.status);
  out += "\r\nServer: sandpool\r\nDate: ";
  out += date;
  out += "\r\n";
  if (!head.content_type.empty()) {
    out += "Content-Type: ";
    out += head.content_type;
    out += "\r\n";
  }
  // 1xx, 204 and 304 carry no body and no Content-Length.
  bool bodiless = head.status < 200 || head.status == 204 || head.status == 304;
  if (!bodiless && head.body_follows_separately && head.unknown_length) {
    if (head.chunked) out += "Transfer-Encoding: chunked\r\n";
  } else if (!bodiless) {
    out += "Content-Length: ";
    r = std::to_chars(num, num + sizeof num, head.body_follows_separately ? head.content_length : body.size());
    out.append(num, r.ptr);
    out += "\r\n";
  }
  if (head.close) out += "Connection: close\r\n";
  out += head.extra_headers;
  out += "\r\n";
  if (!bodiless && !head.head_only && !head.body_follows_separately) out += body;
}

}  // namespace sp::http
