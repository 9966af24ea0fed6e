// Leveled logging to stderr, one line per call; not the access log (see http/access_log.h).
#pragma once

#include <cstdarg>

namespace sp {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

// Process-wide level; set once at start-up from the config, read from any thread.
void set_log_level(LogLevel level);
LogLevel log_level();
bool parse_log_level(const char* text, LogLevel* out);

void log_write(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace sp

#define SP_LOG(level, ...)                                           \
  do {                                                               \
    if (static_cast<int>(level) >= static_cast<int>(::sp::log_level())) \
      ::sp::log_write(level, __VA_ARGS__);                           \
  } while (0)
#define LOG_DEBUG(...) SP_LOG(::sp::LogLevel::kDebug, __VA_ARGS__)
#define LOG_INFO(...) SP_LOG(::sp::LogLevel::kInfo, __VA_ARGS__)
#define LOG_WARN(...) SP_LOG(::sp::LogLevel::kWarn, __VA_ARGS__)
#define LOG_ERROR(...) SP_LOG(::sp::LogLevel::kError, __VA_ARGS__)
