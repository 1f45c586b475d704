<%@ page contentType="text/plain" trimDirectiveWhitespaces="true" %>DIFF-ADMIN tomcat path=<%= request.getServletPath() %><%= request.getPathInfo() == null ? "" : request.getPathInfo() %>
