# Compiler set-up shared by every target: ccache, warnings, sanitizers.
if(MOEATLAS_USE_CCACHE)
  find_program(MOEATLAS_CCACHE ccache)
  if(MOEATLAS_CCACHE)
    set(CMAKE_CXX_COMPILER_LAUNCHER ${MOEATLAS_CCACHE})
    set(CMAKE_CUDA_COMPILER_LAUNCHER ${MOEATLAS_CCACHE})
  endif()
endif()

add_library(moeatlas_options INTERFACE)
target_compile_options(moeatlas_options INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wno-unused-parameter>)
if(MOEATLAS_WARNINGS_AS_ERRORS)
  target_compile_options(moeatlas_options INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
endif()
if(MOEATLAS_SANITIZE)
  target_compile_options(moeatlas_options INTERFACE -fsanitize=${MOEATLAS_SANITIZE} -fno-omit-frame-pointer)
  target_link_options(moeatlas_options INTERFACE -fsanitize=${MOEATLAS_SANITIZE})
endif()
